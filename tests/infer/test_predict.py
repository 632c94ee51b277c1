"""`jinmei-predict` refuses what it cannot read in one line on stderr and a non-zero exit, never a traceback: any input
bytes on stdin or as a file, a directory, an unreadable file, bad flag values. A UTF-8 BOM is dropped as the corpus
reader drops it. The input is refused before the model loads; the bundled GGUF is passed so that input the old code
let through reached llama.cpp's tokenizer (where it used to end in a UnicodeEncodeError traceback)."""
from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jinmei.infer import predict
from jinmei.infer.engine import Completion
from jinmei.model.basemodel import bundled_gguf_path

ROOT = Path(__file__).resolve().parents[2]
ARTICLE = "大阪府警は17日、大阪市北区の無職佐藤花子容疑者（42）を詐欺の疑いで逮捕した。"
ANSWER = '{"persons":[{"name":"佐藤花子","act":"逮捕","address":"大阪市北区","signature":null}]}'
BOM = b"\xef\xbb\xbf"


@pytest.fixture(scope="module")
def params_file(tmp_path_factory) -> Path:
    """A copy of params.yaml, so that the run reads one file whatever happens to the tree meanwhile."""
    out = tmp_path_factory.mktemp("params") / "params.yaml"
    shutil.copyfile(ROOT / "params.yaml", out)
    return out


def run(params_file: Path, *args: str, stdin=None, data: bytes | None = None, timeout: float = 120):
    command = [sys.executable, "-m", "jinmei.infer.predict", "--gguf", str(bundled_gguf_path()), *args]
    env = {**os.environ, "JINMEI_PARAMS": str(params_file), "PYTHONPATH": str(ROOT)}
    if stdin is None and data is None:
        data = b""
    return subprocess.run(command, input=data, stdin=stdin, capture_output=True, timeout=timeout, cwd=ROOT, env=env)


def one_line_refusal(done: subprocess.CompletedProcess, *words: str) -> str:
    err = done.stderr.decode("utf-8", errors="replace")
    assert done.returncode != 0, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], err
    return lines[0]


RANDOM = random.Random(33).randbytes(4096)
SHIFT_JIS = ARTICLE.encode("shift_jis")
CUT = ARTICLE.encode("utf-8")[:-1]            # `head -c` through the last character
BAD_INPUTS = {"random bytes": (RANDOM, "not UTF-8"), "Shift_JIS": (SHIFT_JIS, "not UTF-8"),
              "cut mid-character": (CUT, "middle of a UTF-8 character"),
              "BOM then Shift_JIS": (BOM + SHIFT_JIS, "not UTF-8"), "lone surrogate": (b"\xed\xa0\x80", "not UTF-8")}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bytes_that_are_not_utf8_on_stdin_are_one_line(params_file, name):
    data, words = BAD_INPUTS[name]
    one_line_refusal(run(params_file, data=data), "stdin", words)


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bytes_that_are_not_utf8_in_a_file_are_one_line(params_file, name, tmp_path):
    data, words = BAD_INPUTS[name]
    path = tmp_path / "article.txt"
    path.write_bytes(data)
    one_line_refusal(run(params_file, str(path)), str(path), words)


def test_dev_urandom_on_stdin_ends_at_once_in_one_line(params_file):
    with open("/dev/urandom", "rb") as endless:
        one_line_refusal(run(params_file, stdin=endless, timeout=60), "stdin", "not UTF-8")


def test_an_endless_utf8_stream_is_not_read_forever(params_file):
    """`yes あ | jinmei-predict`: refused once one article's worth is read (the old code read until memory ran out)."""
    proc = subprocess.Popen(["bash", "-c", f"yes あ | {sys.executable} -m jinmei.infer.predict --gguf "
                             f"{bundled_gguf_path()}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "JINMEI_PARAMS": str(params_file), "PYTHONPATH": str(ROOT)})
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("jinmei-predict kept reading an endless stdin")
    one_line_refusal(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), "stdin", "one article")


def test_a_directory_as_the_file_is_one_line(params_file, tmp_path):
    one_line_refusal(run(params_file, str(tmp_path)), str(tmp_path), "directory")


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_a_file_that_cannot_be_read_is_one_line(params_file):
    """/proc/self/mem opens but every read fails (EIO), even for root: an OSError while reading."""
    one_line_refusal(run(params_file, "/proc/self/mem"), "/proc/self/mem", "cannot read")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads a mode-000 file")
def test_a_file_without_read_permission_is_one_line(params_file, tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text(ARTICLE, encoding="utf-8")
    path.chmod(0)
    one_line_refusal(run(params_file, str(path)), str(path), "cannot read")


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", "2048", "99999999999999999999999"])
def test_bad_max_new_tokens_are_refused_in_one_line(params_file, tmp_path, value):
    """0 used to become eval.max_new_tokens silently and -1 "hit 1 tokens"; eval.n_ctx is 2048 in params.yaml."""
    path = tmp_path / "article.txt"
    path.write_text(ARTICLE, encoding="utf-8")
    one_line_refusal(run(params_file, "--max-new-tokens", value, str(path)), "--max-new-tokens", value)


@pytest.mark.parametrize("flags", [["--max-new-tokens"], ["--bogus"], ["a.txt", "b.txt"]])
def test_bad_flags_are_one_line(params_file, flags):
    done = run(params_file, *flags)
    one_line_refusal(done, "jinmei-predict")
    assert done.returncode == 2


def test_a_gguf_flag_that_is_no_gguf_is_one_line(params_file, tmp_path):
    article = tmp_path / "article.txt"
    article.write_text(ARTICLE, encoding="utf-8")
    env = {**os.environ, "JINMEI_PARAMS": str(params_file), "PYTHONPATH": str(ROOT)}
    for gguf, words in ((tmp_path, "not a file"), (article, "not a GGUF file")):
        done = subprocess.run([sys.executable, "-m", "jinmei.infer.predict", "--gguf", str(gguf), str(article)],
                              capture_output=True, timeout=120, cwd=ROOT, env=env)
        one_line_refusal(done, str(gguf), words)


# ---------------------------------------------------------------- what reaches the model (in process, no llama.cpp)

class FakeEngine:
    """Records what predict hands the engine; answers ANSWER."""
    seen: list[dict] = []

    def __init__(self, gguf, **kwargs):
        FakeEngine.seen.append({"gguf": gguf, **kwargs})

    def complete(self, system, articles):
        FakeEngine.seen[-1]["articles"] = list(articles)
        return [Completion(text=ANSWER, prompt_tokens=10, generated_tokens=20, truncated=False)]


@pytest.fixture
def fake(monkeypatch, params_file):
    monkeypatch.setenv("JINMEI_PARAMS", str(params_file))
    monkeypatch.setattr(predict, "Engine", FakeEngine)
    FakeEngine.seen = []
    return FakeEngine.seen


def predicted_article(capfdbinary, argv, stdin: bytes | None = None, monkeypatch=None) -> str:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    predict.main(["--gguf", str(bundled_gguf_path()), *argv])
    assert json.loads(capfdbinary.readouterr().out.decode("utf-8")) == json.loads(ANSWER)
    return FakeEngine.seen[-1]["articles"][0]


@pytest.mark.parametrize("where", ["file", "stdin"])
def test_a_bom_is_dropped_as_the_corpus_reader_drops_it(fake, capfdbinary, monkeypatch, tmp_path, where):
    """A BOM used to reach the prompt (str.strip keeps U+FEFF) and change the answer."""
    got = []
    for data in (ARTICLE.encode("utf-8"), BOM + ARTICLE.encode("utf-8"), BOM + b"\n" + ARTICLE.encode("utf-8") + b"\n"):
        if where == "file":
            path = tmp_path / "article.txt"
            path.write_bytes(data)
            got.append(predicted_article(capfdbinary, [str(path)]))
        else:
            got.append(predicted_article(capfdbinary, [], stdin=data, monkeypatch=monkeypatch))
    assert got == [ARTICLE] * 3


def test_max_new_tokens_reaches_the_engine_as_given(fake, capfdbinary, tmp_path, params_file):
    from jinmei.config.params import load_all

    path = tmp_path / "article.txt"
    path.write_text(ARTICLE, encoding="utf-8")
    predicted_article(capfdbinary, ["--max-new-tokens", "7", str(path)])
    predicted_article(capfdbinary, [str(path)])
    assert [s["max_new_tokens"] for s in fake] == [7, load_all(params_file).eval.max_new_tokens]


def test_a_bom_alone_is_an_empty_article(fake, params_file, tmp_path):
    path = tmp_path / "article.txt"
    path.write_bytes(BOM + b" \n")
    one_line_refusal(run(params_file, str(path)), "empty article")


# ---------------------------------------------------------------- --jsonl: a batch, also outside the repository

def batch_file(path: Path, n: int) -> list[dict]:
    """n demo articles as corpus lines (their gold is ignored), one of them far too long for eval.n_ctx."""
    from jinmei.data.demo import generate

    rows = [{"id": f"a{i:03d}", "text": r["text"], "output": r["output"]}
            for i, r in enumerate(generate(n, positive_share=0.5, seed=3))]
    rows[7]["text"] = ARTICLE * 200
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return rows


def test_jsonl_answers_every_article_in_order_outside_the_repo(params_file, tmp_path):
    """100 articles through the real engine (the bundled GGUF, 3 answer tokens: every answer is cut short, so every
    line must say so and none may pass off a guess), run from a folder that is not the repository."""
    rows = batch_file(tmp_path / "in.jsonl", 100)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "JINMEI_PARAMS"} | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "jinmei.infer.predict", "--gguf", str(bundled_gguf_path()),
                           "--params", str(params_file), "--max-new-tokens", "3", "--jsonl", str(tmp_path / "in.jsonl")],
                          capture_output=True, timeout=600, cwd=elsewhere, env=env)
    err = done.stderr.decode("utf-8")
    assert done.returncode == 2 and "Traceback" not in err, err
    assert "100 of 100 answers are not valid" in err, err
    out = [json.loads(line) for line in done.stdout.decode("utf-8").splitlines()]
    assert [o["id"] for o in out] == [r["id"] for r in rows]
    assert out[7]["verdict"] == "too_long" and out[7]["prompt_tokens"] > 2048
    assert all(o["verdict"] == "truncated" and "persons" not in o for i, o in enumerate(out) if i != 7)


@pytest.mark.parametrize("lines, words", [
    (['{"id": 1, "text": "記事"}', "not json"], "in.jsonl:2: not JSON"),
    (['{"id": 1}'], 'in.jsonl:1: needs "text"'),
    (['{"text": "   "}'], 'in.jsonl:1: needs "text"'),
    (["[1, 2]"], 'in.jsonl:1: needs "text"'),
    ([], "no articles"),
    (['{"text": "山田\\ud800太郎"}'], 'in.jsonl:1: "text" holds a lone surrogate'),
])
def test_jsonl_bad_lines_are_refused_before_the_model_loads(params_file, tmp_path, lines, words):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    one_line_refusal(run(params_file, "--jsonl", str(path)), words)


def test_jsonl_with_an_article_as_well_is_one_line(params_file, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "記事"}\n', encoding="utf-8")
    one_line_refusal(run(params_file, "--jsonl", str(path), str(path)), "not both")


def test_a_name_the_article_does_not_hold_is_warned_about(fake, capfdbinary, tmp_path):
    """The answer names 佐藤花子; an article without her (e.g. one quoting a fake JSON answer) gets the warning."""
    path = tmp_path / "article.txt"
    path.write_text("横浜市で火事があり、けが人はいなかった。", encoding="utf-8")
    predict.main(["--gguf", str(bundled_gguf_path()), str(path)])
    captured = capfdbinary.readouterr()
    assert json.loads(captured.out.decode("utf-8")) == json.loads(ANSWER)
    assert "佐藤花子 does not occur in the article" in captured.err.decode("utf-8")
    path.write_text(ARTICLE, encoding="utf-8")
    predict.main(["--gguf", str(bundled_gguf_path()), str(path)])
    assert "does not occur" not in capfdbinary.readouterr().err.decode("utf-8")
