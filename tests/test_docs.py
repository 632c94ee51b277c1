"""Every repository path the docs name exists: a newcomer who follows one must not land on nothing.

Checked in README*.md, RELIABILITY.md and docs/*.md:
- relative markdown links `[text](path)` (resolved from the linking file; URLs and `#anchors` are not checked);
- repository paths written in the text or in backticks (`jinmei/...`, `tests/...`, `docs/...`, `benchmarks/...`,
  `scripts/...`, `profiles/...`, `stages/...`, `.ci/...`), from the repository root;
- pipeline outputs (`data/...`, `models/...`, `metrics/...`): a committed file, or a path dvc.yaml, params.yaml or a
  profile names (or a folder holding one, or a file inside one);
- dotted module names (`jinmei.config.profile`, `jinmei.infer.engine.GgufChat`, `-m stages.split`): the module
  exists, and the first name after it is defined at its top level;
- bare file names (`test_trainer.py`, `pipeline.sh`): some file in the repository has that name;
- test names in backticks (`test_exp_run_reruns_exactly_the_affected_stages`): a test function (or test module) of
  tests/ has that name.
A placeholder (`<name>`, `{a,b}`, `*`, `…`) ends a path; what comes before it must begin some real path.
"""
from __future__ import annotations

import ast
import functools
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted({*ROOT.glob("README*.md"), ROOT / "RELIABILITY.md", *ROOT.glob("docs/*.md")})

SOURCE_DIRS = ("jinmei", "tests", "docs", "benchmarks", "scripts", "profiles", "stages", ".ci")
OUTPUT_DIRS = ("data", "models", "metrics")
PATH_CHARS = r"A-Za-z0-9_./\-"
PLACEHOLDER = re.compile(r"[<{*…]")
REPO_PATH = re.compile(rf"(?<![{PATH_CHARS}$~@:])((?:{'|'.join(map(re.escape, SOURCE_DIRS + OUTPUT_DIRS))})/"
                       rf"[{PATH_CHARS}<>{{}}*…]*)")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
MODULE = re.compile(rf"(?<![{PATH_CHARS}])jinmei(?:\.[A-Za-z_][A-Za-z0-9_]*)+|(?<=-m )stages\.[A-Za-z_][A-Za-z0-9_]*")
BARE_FILE = re.compile(rf"(?<![{PATH_CHARS}])([A-Za-z0-9_][A-Za-z0-9_\-]*\.(?:py|sh))(?![A-Za-z0-9_])")
TEST_NAME = re.compile(r"`(test_[A-Za-z0-9_]+)`")
# files of other projects that the docs name on purpose
EXTERNAL_FILES = {"convert_hf_to_gguf.py"}


@functools.cache
def repo_files() -> frozenset[str]:
    """Tracked and untracked-but-not-ignored files, as git sees them (what a fresh clone plus your edits holds)."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
        files = {line for line in out.splitlines() if line}
    except (OSError, subprocess.CalledProcessError):
        files = {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*")
                 if p.is_file() and not {".git", ".venv", "build"} & set(p.relative_to(ROOT).parts)}
    return frozenset(f for f in files if (ROOT / f).exists())


@functools.cache
def repo_dirs() -> frozenset[str]:
    return frozenset(str(Path(f).parents[i].as_posix()) for f in repo_files() for i in range(len(Path(f).parts) - 1))


@functools.cache
def pipeline_paths() -> frozenset[str]:
    """Paths the pipeline writes or reads, as dvc.yaml, params.yaml and the profiles name them."""
    texts = [(ROOT / name).read_text(encoding="utf-8") for name in ("dvc.yaml", "params.yaml")]
    texts += [p.read_text(encoding="utf-8") for p in sorted(ROOT.glob("profiles/*.yaml"))]
    found = re.compile(rf"(?<![{PATH_CHARS}])(?:{'|'.join(OUTPUT_DIRS)})/[{PATH_CHARS}]*")
    return frozenset(m.group(0).rstrip("/.") for text in texts for m in found.finditer(text))


def _is_real(path: str) -> bool:
    """path (no placeholder) is a file or folder of the repository, or a pipeline output."""
    path = path.rstrip("/")
    if path in repo_files() or path in repo_dirs():
        return True
    if path.split("/", 1)[0] in OUTPUT_DIRS:
        # `dvc add P` writes P.dvc and a .gitignore beside P
        path = path.removesuffix(".dvc").removesuffix("/.gitignore")
        return any(path == k or path.startswith(k + "/") or k.startswith(path + "/") for k in pipeline_paths())
    return False


def _begins_a_real_path(prefix: str) -> bool:
    known = repo_files() | repo_dirs()
    if prefix.split("/", 1)[0] in OUTPUT_DIRS:
        known = known | pipeline_paths()
    return any(k.startswith(prefix) for k in known) or any(prefix.startswith(k + "/") for k in pipeline_paths())


def check_repo_path(raw: str) -> str | None:
    """None when raw names something real, else why not."""
    cut = PLACEHOLDER.search(raw)
    if cut:
        prefix = raw[:cut.start()]
        return None if _begins_a_real_path(prefix) else f"no path begins with {prefix!r}"
    path = raw.rstrip(".,:;")
    return None if _is_real(path) else "does not exist"


@functools.cache
def top_level_names(module: Path) -> frozenset[str]:
    names = set()
    for node in ast.parse(module.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return frozenset(names)


@functools.cache
def defined_test_names() -> frozenset[str]:
    """Test functions defined anywhere under tests/, and the test modules' names."""
    names = set()
    for f in repo_files():
        if f.startswith("tests/") and f.endswith(".py"):
            names.add(Path(f).stem)
            names |= set(re.findall(r"^\s*(?:async\s+)?def (test_\w+)", (ROOT / f).read_text(encoding="utf-8"), re.M))
    return frozenset(names)


def check_module(dotted: str) -> str | None:
    parts = dotted.split(".")
    here = ROOT / parts[0]
    for i, part in enumerate(parts[1:], start=1):
        if (here / part / "__init__.py").exists() or (here / part).is_dir():
            here = here / part
            continue
        if (here / f"{part}.py").exists():
            module, rest = here / f"{part}.py", parts[i + 1:]
        else:
            module, rest = here / "__init__.py", parts[i:]
        if not module.exists():
            return f"no module {'.'.join(parts[:i + 1])}"
        if rest and rest[0] not in top_level_names(module):
            return f"{module.relative_to(ROOT)} defines no {rest[0]!r}"
        return None
    return None


def check_link(doc: Path, target: str) -> str | None:
    if re.match(r"[a-z][a-z0-9+.\-]*:", target) or target.startswith(("#", "//")):
        return None                                        # a URL, mailto:, an anchor on the same page
    path = target.split("#", 1)[0].split("?", 1)[0]
    resolved = (doc.parent / path).resolve()
    try:
        rel = resolved.relative_to(ROOT).as_posix()
    except ValueError:
        return "points outside the repository"
    if rel == ".":
        return None
    return None if _is_real(rel) else "link target does not exist"


def problems(doc: Path, text: str | None = None) -> list[str]:
    """What is wrong in doc (or in text, read as if it were doc)."""
    text = doc.read_text(encoding="utf-8") if text is None else text
    found = []

    def report(match: re.Match, what: str, why: str | None) -> None:
        line = text.count("\n", 0, match.start()) + 1
        where = f"{doc.relative_to(ROOT)}:{line}: {what}: "
        if why and not any(f.startswith(where) for f in found):   # `[docs/x.md](docs/x.md)`: one report
            found.append(where + why)

    for m in LINK.finditer(text):
        report(m, m.group(1), check_link(doc, m.group(1)))
    for m in REPO_PATH.finditer(text):
        report(m, m.group(1), check_repo_path(m.group(1)))
    for m in MODULE.finditer(text):
        report(m, m.group(0), check_module(m.group(0)))
    names = {Path(f).name for f in repo_files()} | EXTERNAL_FILES
    for m in BARE_FILE.finditer(text):
        report(m, m.group(1), None if m.group(1) in names else "no file of that name in the repository")
    for m in TEST_NAME.finditer(text):
        report(m, m.group(1), None if m.group(1) in defined_test_names() else "no test of that name in tests/")
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_path_the_doc_names_exists(doc):
    found = problems(doc)
    assert not found, "\n" + "\n".join(found)


def test_the_checks_catch_wrong_paths_and_leave_prose_alone():
    """The checker itself: each wrong path below is reported, the right ones and the prose are not."""
    doc = ROOT / "docs" / "_probe.md"
    text = "\n".join([
        "[ok](corpus.md) [ok](../README.md#layout) [url](https://example.com/x.md) [anchor](#top)",
        "[bad](nowhere.md)",
        "`jinmei/train/trainer.py`, tests/train/test_trainer.py, the `jinmei/` library, `metrics/eval.json`,",
        "`data/predictions/<split>.jsonl`, `models/gguf/Modelfile`, tests/*/test_*.py, `profiles/<name>.yaml`.",
        "jinmei/training.py and tests/test_training.py are gone; so is `metrics/nothing/here.json`.",
        "`python -m jinmei.config.profile`, `jinmei.infer.engine.GgufChat`, python -m stages.split, and",
        "jinmei.merge.main, jinmei.export.gguf.no_such_name, -m stages.nothing.",
        "test_trainer.py and setup.sh exist; test_training.py does not. Prose: and/or, jinmei. Then 1/2.",
        "`test_exp_run_reruns_exactly_the_affected_stages` exists, `test_no_such_behaviour` does not.",
    ])
    found = "\n".join(problems(doc, text))
    for wrong in ("nowhere.md", "jinmei/training.py", "tests/test_training.py", "metrics/nothing/here.json",
                  "jinmei.merge.main", "no_such_name", "stages.nothing", ": test_training.py",
                  "test_no_such_behaviour"):
        assert wrong in found, wrong
    assert len(found.splitlines()) == 9, found

