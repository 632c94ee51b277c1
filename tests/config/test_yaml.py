"""One reading of params.yaml: jinmei reads it exactly as DVC does (UTF-8, ruamel.yaml's safe loader, YAML 1.2),
and refuses, in one line naming the file, the line and what to write instead, what DVC refuses (duplicate keys,
non-UTF-8) and what YAML 1.1 readers would take differently (yes/no/on/off, 34:08, 010)."""
from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc.utils.serialize import _yaml as dvc_yaml

from jinmei.config import params as P
from jinmei.config import preflight
from jinmei.errors import JinmeiError

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = (ROOT / "params.yaml").read_text(encoding="utf-8")


def dvc_reads(text: str):
    """What `dvc repro` / `dvc exp run` / `dvc params diff` read (dvc.utils.serialize._yaml.parse_yaml)."""
    return dvc_yaml.parse_yaml(text, "params.yaml")


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def edited(tmp_path: Path, old: str, new: str, text: str = COMMITTED) -> Path:
    assert old in text, old
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if needle in line)


# ---------------------------------------------------------------- the same values as DVC

AGREED = [
    "lr: 5e-05",            # what `dvc exp run -S stage2.lr=5e-5` writes: a number to both
    "lr: 1.0e-5", "lr: 1e-5", "x: 5E-5", "x: .5", "x: 5.", "x: 0.10", "x: -1", "x: +5", "x: 1_000",
    "x: 0o10", "x: 0x10", "x: .inf", "x: -.inf", "x: .nan", "x: ~", "x: null", "x: Null",
    "x: true", "x: false", "x: True", "x: FALSE", "x: y", "x: n",
    "x: 'yes'", 'x: "on"', "x: '34:08'", "x: '010'", "x: 2026-01-01", "x: 1.5e3",
    "x: a b", "x: |-\n  one\n  two", "x: [1, 2]", "x: {a: 1}", "x:\n- a\n- b", "a: &x 1\nb: *x",
    "\ufeffx: 1",           # a BOM: DVC's UTF-8 read keeps it, ruamel.yaml skips it
    "",
]


@pytest.mark.parametrize("text", AGREED, ids=repr)
def test_jinmei_reads_what_dvc_reads(text, tmp_path):
    (tmp_path / "params.yaml").write_text(text, encoding="utf-8")
    assert same(P.read_yaml(tmp_path / "params.yaml"), dvc_reads(text))


def test_the_committed_files_read_the_same_by_both():
    for name in ("params.yaml", "dvc.yaml", *(f"profiles/{p.name}" for p in (ROOT / "profiles").glob("*.yaml"))):
        text = (ROOT / name).read_text(encoding="utf-8")
        assert same(P.read_yaml(ROOT / name), dvc_reads(text)), name


def test_exponent_without_a_dot_stays_a_float(tmp_path):
    path = edited(tmp_path, "lr: 1.25e-5", "lr: 5e-05")
    assert P.load_all(path).stage2.lr == 5e-05 and dvc_reads(path.read_text())["stage2"]["lr"] == 5e-05


# ---------------------------------------------------------------- what YAML 1.1 readers take otherwise: refused

# (key, written, what DVC reads, what a YAML 1.1 reader reads, words of the fix)
AMBIGUOUS = [
    ("eval.grammar", "yes", "yes", True, "write true or false"),
    ("eval.grammar", "no", "no", False, "write true or false"),
    ("eval.grammar", "on", "on", True, "write true or false"),
    ("eval.grammar", "Off", "Off", False, "write true or false"),
    ("quantize.keep_f16", "NO", "NO", False, "write true or false"),
    ("eval.n_ctx", "34:08", "34:08", 2048, "write 2048"),
    ("eval.n_ctx", "1:00:00", "1:00:00", 3600, "write 3600"),
    ("seed", "010", 10, 8, "write 10 without the leading zero (or 0o10 for octal)"),
    ("eval.n_threads", "08", 8, "08", "write 8 without the leading zero"),
    ("quantize.name", "off", "off", False, "'off' in quotes"),
]
OLD_VALUES = {"eval.grammar": "grammar: false", "quantize.keep_f16": "keep_f16: false", "eval.n_ctx": "n_ctx: 2048",
              "seed": "seed: 20261124", "eval.n_threads": "n_threads: 2", "quantize.name": "name: jinmei"}


@pytest.mark.parametrize("key,written,dvc_value,yaml11_value,fix", AMBIGUOUS,
                         ids=[f"{k}={w}" for k, w, *_ in AMBIGUOUS])
def test_values_yaml_1_1_reads_otherwise_are_refused_with_line_and_fix(tmp_path, key, written, dvc_value,
                                                                       yaml11_value, fix):
    old = OLD_VALUES[key]
    line = old.split(":")[0] + ": " + written
    assert dvc_reads(line)[old.split(":")[0]] == dvc_value              # DVC: YAML 1.2
    assert yaml.safe_load(line)[old.split(":")[0]] == yaml11_value      # PyYAML: YAML 1.1
    path = edited(tmp_path, old, line)
    with pytest.raises(JinmeiError) as err:
        P.load_all(path)
    message = str(err.value)
    assert message.startswith(f"{path} line {line_of(path, line)}: {key}: DVC (YAML 1.2) reads {written} as ")
    assert fix in message and "\n" not in message


def test_quoting_the_value_says_it_is_text(tmp_path):
    path = edited(tmp_path, "name: jinmei", "name: 'off'")
    assert P.load_all(path).quantize.name == "off"


# ---------------------------------------------------------------- what DVC refuses: refused the same way, in one line


@pytest.mark.parametrize("old,new,needle,key", [
    ("  lr: 1.25e-5", "  lr: 1.25e-5\n  lr: 1.0e-4", "lr: 1.0e-4", "stage2.lr"),
    ("merge:\n", "stage2:\n  lr: 1.0e-4\n\nmerge:\n", "stage2:\n  lr: 1.0e-4", "stage2"),
    ("seed: 20261124", "seed: 20261124\nseed: 7", "seed: 7", "seed"),
], ids=["key twice in a section", "a second stage2 section", "top-level key twice"])
def test_duplicate_keys_are_refused_as_dvc_refuses_them(tmp_path, old, new, needle, key):
    path = edited(tmp_path, old, new)
    with pytest.raises(dvc_yaml.YAMLFileCorruptedError):
        dvc_reads(path.read_text(encoding="utf-8"))
    text = path.read_text(encoding="utf-8")
    line = text[:text.index(new) + new.index(needle)].count("\n") + 1
    with pytest.raises(JinmeiError) as err:
        P.load_all(path)
    message = str(err.value)
    assert message.startswith(f"{path} line {line}: {key} appears a second time (first at line ")
    assert "keep one" in message and "\n" not in message


def test_shift_jis_comment_is_refused_with_its_line(tmp_path):
    data = COMMITTED.replace("  n_ctx: 2048", "  n_ctx: 2048  # 文脈長").encode("utf-8")
    data = data.replace("# 文脈長".encode("utf-8"), "# 文脈長".encode("shift_jis"))
    path = tmp_path / "params.yaml"
    path.write_bytes(data)
    with pytest.raises(Exception, match="is not valid utf-8"):          # DVC refuses it too
        dvc_yaml.load_yaml(path)
    with pytest.raises(JinmeiError) as err:
        P.load_all(path)
    line = data[:data.index("# ".encode() + "文脈長".encode("shift_jis"))].count(b"\n") + 1
    message = str(err.value)
    assert message.startswith(f"{path} line {line}: byte 0x") and "is not UTF-8" in message
    assert "iconv -f SHIFT_JIS -t UTF-8" in message and "\n" not in message


def test_preflight_cli_on_a_non_utf8_file_says_one_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(COMMITTED.encode("utf-8").replace(b"# raw corpus", "# 生コーパス".encode("shift_jis")))
    line = line_of(ROOT / "params.yaml", "# raw corpus")
    done = subprocess.run([sys.executable, "-m", "jinmei.config.preflight"], cwd=ROOT, capture_output=True, text=True,
                          env={**__import__("os").environ, "JINMEI_PARAMS": str(path)})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and f"{path} line {line}: byte 0x" in done.stderr


@pytest.mark.parametrize("text,words", [
    ("seed: 1\nstage2: [1\n", "line 3: not valid YAML (while parsing a flow sequence"),
    ("seed: 1\n\tcorpus: x\n", "line 2: not valid YAML (while scanning for the next token, found character '\\t'"),
    ("seed: 1\ncorpus: \x07\n", "line 2: not valid YAML (character U+0007: special characters are not allowed)"),
])
def test_yaml_dvc_cannot_parse_is_one_line_with_its_line(tmp_path, text, words):
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(dvc_yaml.YAMLFileCorruptedError):
        dvc_reads(text)
    with pytest.raises(JinmeiError) as err:
        P.read_yaml(path)
    assert str(err.value).startswith(f"{path} {words}") and "\n" not in str(err.value)


# ---------------------------------------------------------------- every reader of params.yaml reads it this way


def test_pyyaml_callers_read_as_read_yaml_does():
    """`yaml.load(text, Loader=ParamsLoader)` (jinmei.config.profile checks its result that way) is read_yaml."""
    assert same(yaml.load(COMMITTED, Loader=P.ParamsLoader), P.read_yaml(ROOT / "params.yaml"))
    assert yaml.load("x: '34:08'\ny: 0o10", Loader=P.ParamsLoader) == {"x": "34:08", "y": 8}
    with pytest.raises(JinmeiError, match="line 2: y: DVC"):
        yaml.load("x: 1\ny: on\n", Loader=P.ParamsLoader)


def test_a_profile_cannot_bring_in_a_value_yaml_1_1_reads_otherwise(tmp_path):
    from jinmei.config.profile import apply

    (tmp_path / "p.yaml").write_text("eval:\n  grammar: on\n", encoding="utf-8")
    with pytest.raises(JinmeiError, match=r"p.yaml line 2: eval.grammar: DVC \(YAML 1.2\) reads on as"):
        apply(tmp_path / "p.yaml", ROOT / "params.yaml")
    params = edited(tmp_path, "grammar: false", "grammar: yes")
    (tmp_path / "ok.yaml").write_text("eval:\n  n_threads: 4\n", encoding="utf-8")
    with pytest.raises(JinmeiError, match=r"applied to .*eval.grammar: DVC \(YAML 1.2\) reads yes as"):
        apply(tmp_path / "ok.yaml", params)


def test_a_profile_keeps_every_null_written_as_null(tmp_path):
    from jinmei.config.profile import apply

    (tmp_path / "p.yaml").write_text("eval:\n  n_threads: 4\nstage1:\n  size: null\n", encoding="utf-8")
    text = apply(tmp_path / "p.yaml", ROOT / "params.yaml")
    assert "\n  revision: null " in text and "\n  size: null" in text
    assert not re.search(r"^ +(revision|size): *(#.*)?$", text, re.M)


def test_every_stage_refuses_it_before_any_work(tmp_path):
    path = edited(tmp_path, "grammar: false", "grammar: yes")
    for stage in P.STAGES:
        with pytest.raises(JinmeiError, match="eval.grammar: DVC"):
            preflight.check(stage, params_file=path)
