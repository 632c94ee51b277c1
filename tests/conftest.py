import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny random llama with the real SmolLM2 tokenizer and chat template (seconds to build)."""
    if os.environ.get("JINMEI_TEST_BASE"):  # e.g. on a GPU machine without the bundled GGUF
        return Path(os.environ["JINMEI_TEST_BASE"])
    from jinmei.model.basemodel import make_tiny_base

    out = tmp_path_factory.mktemp("tiny") / "base"
    make_tiny_base(out, seed=0)
    return out


@pytest.fixture(scope="session")
def params() -> dict:
    """params.yaml as a plain dict (tests change copies of it; jinmei.config.params.parse types it)."""
    from jinmei.config.params import read_yaml

    return read_yaml(ROOT / "params.yaml")
