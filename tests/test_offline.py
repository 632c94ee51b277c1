"""scripts/offline/: the bundle for an offline GPU host (docs/offline.md), made and checked without network.

bundle.sh runs in a small git repository of its own (the two scripts, params.yaml, dvc.yaml, pyproject.toml, a
corpus) with --no-wheels and a stand-in llama-cpp-python sdist; run.sh --check-only then verifies every sha256 and
joins the pieces, as it does first thing on the host.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LLAMA_VERSION = re.search(r'"llama-cpp-python==([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_repo(tmp_path: Path, **params) -> Path:
    """A committed checkout holding what bundle.sh reads; params: dotted params.yaml keys to change."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copytree(ROOT / "scripts/offline", repo / "scripts/offline")
    for name in ("dvc.yaml", "pyproject.toml"):
        shutil.copy(ROOT / name, repo / name)
    values = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    for key, value in params.items():
        section, name = key.split(".")
        values[section][name] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(values, allow_unicode=True, sort_keys=False), encoding="utf-8")
    (repo / ".gitignore").write_text("/data/\n")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-qm", "test"], cwd=repo, check=True)
    return repo


def bundle(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", "scripts/offline/bundle.sh", *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=120)


def check_only(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(folder / "run.sh"), str(folder), "--check-only"], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def inputs(tmp_path):
    """A repo whose corpus is a file of its own, a tiny model folder, a stand-in sdist."""
    repo = make_repo(tmp_path, **{"corpus.path": "data/corpus.jsonl", "base.model": "tiny-random"})
    (repo / "data").mkdir()
    (repo / "data/corpus.jsonl").write_bytes(os.urandom(3000))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "model.safetensors").write_bytes(os.urandom(5000))
    sdist = tmp_path / "llama_cpp_python.tar.gz"
    sdist.write_bytes(os.urandom(2500))
    return repo, model, sdist


def test_manifest_sha256_pieces_and_join(inputs, tmp_path):
    repo, model, sdist = inputs
    out = tmp_path / "bundle"
    made = bundle(repo, "--out", str(out), "--no-wheels", "--base-model", str(model), "--llama-sdist", str(sdist),
                  "--piece-size", "1K")
    assert made.returncode == 0, made.stderr
    assert "total" in made.stdout

    # every file as shipped has its sha256 in SHA256SUMS, and nothing else is there
    sums = dict(reversed(line.split("  ", 1)) for line in (out / "SHA256SUMS").read_text().splitlines())
    shipped = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    assert set(sums) == shipped
    assert all(sha256(out / name) == digest for name, digest in sums.items())

    # every file over 1 KiB is in pieces of at most 1 KiB; JOINED.sha256 holds the whole file's sha256
    joined = dict(reversed(line.split("  ", 1)) for line in (out / "JOINED.sha256").read_text().splitlines())
    originals = {"data/corpus.jsonl": repo / "data/corpus.jsonl", "model/base/model.safetensors":
                 model / "model.safetensors", f"sdist/llama_cpp_python-{LLAMA_VERSION}.tar.gz": sdist}
    assert set(originals) <= set(joined)
    for name, source in originals.items():
        pieces = sorted(out.glob(name + ".part-*"))
        assert not (out / name).exists() and len(pieces) == -(-source.stat().st_size // 1024)
        assert all(p.stat().st_size <= 1024 for p in pieces)
        assert joined[name] == sha256(source)
    assert all(p.stat().st_size <= 1024 for p in out.rglob("*.part-*"))
    assert (out / "model/base/config.json").read_text() == '{"model_type": "llama"}'   # small: whole

    manifest = (out / "MANIFEST.txt").read_text()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert head in manifest and "cat data/corpus.jsonl.part-* > data/corpus.jsonl" in manifest
    env = dict(line.split("=", 1) for line in (out / "bundle.env").read_text().splitlines())
    assert env["COMMIT"] == head and env["BASE_KIND"] == "folder" and env["CORPUS_TARGET"] == "data/corpus.jsonl"

    # the host's first step: verify, join, and verify the joined files; a second run finds them whole
    for _ in range(2):
        checked = check_only(out)
        assert checked.returncode == 0, checked.stderr
        assert "bundle OK" in checked.stdout
    for name, source in originals.items():
        assert (out / name).read_bytes() == source.read_bytes()
    code = subprocess.run(["tar", "tzf", str(out / "code.tar.gz")], capture_output=True, text=True).stdout.split()
    assert {"code/params.yaml", "code/scripts/offline/run.sh", "code/dvc.yaml"} <= set(code)


def test_a_damaged_piece_is_named(inputs, tmp_path):
    repo, model, sdist = inputs
    out = tmp_path / "bundle"
    assert bundle(repo, "--out", str(out), "--no-wheels", "--base-model", str(model), "--llama-sdist", str(sdist),
                  "--piece-size", "1K").returncode == 0
    piece = sorted(out.glob("data/corpus.jsonl.part-*"))[1]
    piece.write_bytes(piece.read_bytes()[:-1] + b"!")
    checked = check_only(out)
    assert checked.returncode != 0
    assert "data/corpus.jsonl.part-aab: FAILED" in checked.stderr and "copy these files again" in checked.stderr
    assert not (out / "data/corpus.jsonl").exists()


@pytest.mark.parametrize("args, message", [
    ([], "--out DIR is required"),
    (["--out", "{nonempty}"], "is not an empty folder"),
    (["--out", "{out}", "--piece-size", "12x"], "--piece-size '12x'"),
    (["--out", "{out}", "--base-model", "{tmp}/nothing"], "not a Hugging Face model folder"),
    (["--out", "{out}", "--no-wheels", "--wheels-from", "{tmp}"], "exclude each other"),
    (["--out", "{out}", "--bogus"], "unknown argument '--bogus'"),
    (["--out", "{out}", "--llama-sdist", "{sdist}", "--wheels-from", "{nonempty}"], "holds no *.whl"),  # half-written
])
def test_bad_input_fails_with_one_clear_message(inputs, tmp_path, args, message):
    repo, _, sdist = inputs
    (tmp_path / "nonempty").mkdir()
    (tmp_path / "nonempty/file").write_text("x")
    args = [a.format(nonempty=tmp_path / "nonempty", out=tmp_path / "out", tmp=tmp_path, sdist=sdist) for a in args]
    made = bundle(repo, *args)
    assert made.returncode != 0
    assert made.stderr.startswith("bundle.sh: ") and message in made.stderr and made.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()          # nothing half-written is left


def test_uncommitted_changes_are_refused_unless_allowed(inputs, tmp_path):
    repo, model, sdist = inputs
    with open(repo / "params.yaml", "a", encoding="utf-8") as f:
        f.write("# an edit\n")
    refused = bundle(repo, "--out", str(tmp_path / "a"), "--no-wheels", "--base-model", str(model),
                     "--llama-sdist", str(sdist))
    assert refused.returncode != 0 and "uncommitted changes" in refused.stderr
    allowed = bundle(repo, "--out", str(tmp_path / "b"), "--no-wheels", "--base-model", str(model),
                     "--llama-sdist", str(sdist), "--allow-dirty")
    assert allowed.returncode == 0, allowed.stderr
    assert "NOT in the bundle" in allowed.stderr and "params.yaml" in allowed.stderr


def test_bundled_gguf_in_pieces_and_the_demo_corpus_left_to_the_host(tmp_path):
    from jinmei.errors import JinmeiError
    from jinmei.model.basemodel import bundled_gguf_path

    try:
        gguf = bundled_gguf_path()
    except JinmeiError:
        pytest.skip("the bundled SmolLM2 GGUF is not installed (bash scripts/setup.sh)")
    repo = make_repo(tmp_path)            # params.yaml as committed: bundled base model, the demo corpus
    sdist = tmp_path / "sdist.tar.gz"
    sdist.write_bytes(b"stand-in")
    out = tmp_path / "bundle"
    made = bundle(repo, "--out", str(out), "--no-wheels", "--llama-sdist", str(sdist), "--piece-size", "40M")
    assert made.returncode == 0, made.stderr
    assert "pipeline output" in made.stdout and not (out / "data").exists()
    name = f"model/{gguf.parent.name}/{gguf.name}"
    assert len(list(out.glob(name + ".part-*"))) == -(-gguf.stat().st_size // (40 << 20))
    checked = check_only(out)
    assert checked.returncode == 0, checked.stderr
    assert sha256(out / name) == sha256(gguf)
    assert (out / f"model/{gguf.parent.name}/__init__.py").is_file()
