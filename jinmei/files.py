"""Files every stage writes: atomic (a killed stage leaves the old output or none), UTF-8, stable bytes."""
from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from jinmei.errors import JinmeiError


@contextlib.contextmanager
def atomic_path(final: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `final` only if the block succeeds.

    A stage killed at any moment leaves the old output or none, never a half-written one.
    Works for files and directories alike.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{final.name}.tmp-"
    for stale in final.parent.glob(f"{glob.escape(prefix)}*"):  # left by a writer that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent)) / final.name
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        elif final.exists() or final.is_symlink():
            final.unlink()
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def safetensors_shapes(model_dir: Path) -> dict[str, list[int]]:
    """Tensor shapes from the safetensors headers, without loading any weight."""
    shapes = {}
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        try:
            with open(file, "rb") as f:
                (header_len,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(header_len))
        except (struct.error, json.JSONDecodeError, UnicodeDecodeError, MemoryError, OverflowError) as e:
            raise JinmeiError(f"{file}: not a readable safetensors file ({e}); rerun the stage that wrote it") from e
        shapes.update({name: info["shape"] for name, info in header.items() if name != "__metadata__"})
    return shapes


def numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def human_bytes(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.0f} MB"


def require_free_disk(folder: Path, need: int, what: str) -> None:
    """Fail before writing a large output, with the amount needed, rather than half-way through."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise JinmeiError(f"{folder}: {human_bytes(free)} free, {what} needs up to {human_bytes(need)}; "
                          "free some disk space")


def write_json(path: Path | str, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def write_jsonl(path: Path | str, rows: Iterable[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """Read a JSONL file the pipeline itself wrote (raw corpora go through stages.contract)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
