"""The layout's promises: thin entry points, no import circle, and dvc.yaml deps = each stage's import closure."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = tuple(yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"])
# Modules that can only refuse a run (or print its error): editing them never changes an output, so no stage
# depends on them. jinmei.config.params passes params.yaml's values through unchanged (every key must be present).
REFUSE_ONLY = {"jinmei.config.params", "jinmei.config.preflight", "jinmei.errors"}


def module_file(name: str) -> Path:
    path = ROOT / Path(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imports_of(name: str) -> set[str]:
    """Every jinmei.* / stages.* module a module imports, at module level or inside a function."""
    tree = ast.parse(module_file(name).read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if module_file(f"{node.module}.{a.name}").exists()}
    return {m for m in found if m.split(".")[0] in ("jinmei", "stages") and module_file(m).exists()
            and not module_file(m).name == "__init__.py"}


def closure(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in seen or current in REFUSE_ONLY:
            continue
        seen.add(current)
        todo += sorted(imports_of(current))
    return seen


def dvc_stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def test_stages_folder_holds_only_entry_points():
    names = sorted(p.stem for p in (ROOT / "stages").glob("*.py") if p.stem != "__init__")
    assert names == sorted(STAGES)
    for stage in STAGES:
        imported = imports_of(f"stages.{stage}")
        assert not any(m.startswith("stages.") for m in imported), f"stages/{stage}.py imports another entry point"
        assert len(module_file(f"stages.{stage}").read_text().splitlines()) <= 45, f"stages/{stage}.py is not short"


def test_params_knows_the_stages_in_dvc_yaml_order():
    from jinmei.config.params import STAGES as ordered

    assert ordered == STAGES


def test_package_files_hold_no_code():
    for init in (*(ROOT / "jinmei").rglob("__init__.py"), ROOT / "stages" / "__init__.py"):
        body = ast.parse(init.read_text(encoding="utf-8")).body
        assert all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body), init


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_deps_are_the_import_closure(stage):
    want = sorted(str(module_file(m).relative_to(ROOT)) for m in closure(f"stages.{stage}"))
    have = sorted(d for d in dvc_stages()[stage]["deps"] if d.endswith(".py"))
    assert have == want, f"dvc.yaml stage {stage}: deps {have}\n  but it imports {want}"


def test_no_import_circle():
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in (ROOT / "jinmei").rglob("*.py")
               if p.stem != "__init__"]
    graph = {m: imports_of(m) for m in modules}
    state: dict[str, int] = {}

    def visit(m, path):
        if state.get(m) == 1:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(m):] + [m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            visit(n, path + [m])
        state[m] = 2

    for m in sorted(graph):
        visit(m, [])


def test_every_declared_param_exists():
    from jinmei.config.params import load_all

    committed = load_all(ROOT / "params.yaml")
    for stage, spec in dvc_stages().items():
        for key in spec.get("params", []):
            obj = committed
            for part in key.split("."):
                assert hasattr(obj, part), f"dvc.yaml {stage}: params {key} is no knob"
                obj = getattr(obj, part)


def write_deps() -> None:
    """`python tests/test_layout.py`: rewrite each stage's code deps in dvc.yaml from its import closure."""
    import re

    text = (ROOT / "dvc.yaml").read_text(encoding="utf-8")
    for stage in STAGES:
        code = sorted(str(module_file(m).relative_to(ROOT)) for m in closure(f"stages.{stage}"))
        m = re.search(rf"\n  {stage}:\n(.*?)\n    deps: \[(.*?)\]", text, re.S)
        data = [d.strip() for d in m.group(2).replace("\n", " ").split(",") if not d.strip().endswith(".py")]
        lines, line = [], "    deps: ["
        for i, dep in enumerate(code + data):
            piece = dep + (", " if i < len(code) + len(data) - 1 else "]")
            if len(line) + len(piece) > 118:
                lines.append(line.rstrip())
                line = "           "
            line += piece
        lines.append(line)
        text = text[:m.start(2) - len("    deps: [")] + "\n".join(lines) + text[m.end(2) + 1:]
    (ROOT / "dvc.yaml").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    write_deps()
