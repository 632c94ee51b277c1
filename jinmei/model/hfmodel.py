"""Plain Hugging Face model folders, as every stage after `base` reads and writes them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from jinmei.errors import JinmeiError


def check_model_dir(path: Path, what: str) -> None:
    """A readable error for a missing or obviously broken HF model folder."""
    if not path.is_dir():
        raise JinmeiError(f"{path}: {what} folder not found")
    config = path / "config.json"
    if not config.is_file():
        raise JinmeiError(f"{path}: no config.json; is this a Hugging Face model folder ({what})?")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise JinmeiError(f"{config}: not valid JSON ({e}); rerun the stage that wrote it") from e
    if not any(path.glob("*.safetensors")):
        raise JinmeiError(f"{path}: no *.safetensors weights ({what}); rerun the stage that wrote it")


SENTENCEPIECE = "tokenizer.model"


def source_file(name: str | Path, filename: str) -> Path | None:
    """A file of a local model folder or of a hub model already in the cache (never downloaded here)."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder / filename if (folder / filename).is_file() else None
    from transformers.utils import cached_file

    found = cached_file(str(name), filename, local_files_only=True, _raise_exceptions_for_missing_entries=False,
                        _raise_exceptions_for_connection_errors=False)
    return Path(found) if found else None


def save_tokenizer(tokenizer, out_dir: Path, source: str | Path | None = None) -> None:
    """Save the tokenizer; say explicitly that no BOS/EOS is added, so the GGUF says so too."""
    tokenizer.save_pretrained(out_dir)
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(add_bos_token=False, add_eos_token=False)
    for loader_only in ("is_local", "local_files_only"):  # how it was loaded, not what it is
        config.pop(loader_only, None)
    if "chat_template" not in config and tokenizer.chat_template:
        config["chat_template"] = tokenizer.chat_template
    config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    # transformers 5 saves no SentencePiece model; llama.cpp's converter needs it for SentencePiece vocabularies
    # (Phi-3, Mistral, llm-jp: without it the converter fails or scores every piece -1000 and tokenizes otherwise)
    original = source_file(source, SENTENCEPIECE) if source is not None else None
    if original is not None and not (out_dir / SENTENCEPIECE).exists():
        shutil.copyfile(original, out_dir / SENTENCEPIECE)


def special_tokens(tokenizer) -> list[str]:
    """Strings of the tokenizer's special (control) tokens: a chat template's markers, never article text."""
    return [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
