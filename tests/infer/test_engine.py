"""The eval engine against the naive loop, on the real bundled GGUF (SmolLM2-135M-Instruct Q4_1).

The base model is untrained for the task: its answers are long Japanese-ish garbage, which makes near-tied
logits common and so is a hard test of "identical greedy outputs".
"""
import json

import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from jinmei.errors import JinmeiError
from jinmei.model.basemodel import bundled_gguf_path as bundled_gguf
from jinmei.infer.engine import (Engine, answer_grammar, answer_grammar_text, complete_all, load_llama,
                        naive_complete)
from jinmei.infer.engine import same_answer as llm_same_answer
from jinmei.eval.scoring import judge

SYSTEM = ('Extract the persons from the Japanese news article. Answer with JSON only: '
          '{"persons":[{"name":...,"act":...,"address":...,"signature":...}]}; unknown fields are null. '
          'If no person is relevant, answer {"persons":[]}.')
CHAT_SYSTEM = "You are a helpful assistant."
CHATS = ["Thank you!", "東京の天気は？", "Thank you!!"]   # "Thank you!" ends by itself in 17 tokens: the end-of-turn path
FIELDS = ["name", "act", "address", "signature"]
ARTICLES = [
    "東京都内で15日、会社員の山田太郎さん（35）が横断歩道で倒れていた高齢の男性を救助し、警視庁から感謝状が贈られた。",
    "気象庁によると、16日は西日本を中心に大雨となる見込み。土砂災害に警戒が必要だ。",
    "大阪府警は17日、大阪市北区の無職佐藤花子容疑者（42）を詐欺の疑いで逮捕した。調べに対し容疑を認めているという。",
    "プロ野球の試合は雨のため中止となった。振り替え試合は来月行われる。",
    "横浜市中区の会社役員鈴木一郎氏（61）は18日、記者会見で新事業の計画を発表した。",
    "日経平均株価は続伸し、終値は前日比312円高となった。半導体関連株が買われた。",
    "福岡県警は、同県久留米市の高校生の男子生徒（17）が川でおぼれた小学生を助けたとして表彰した。",
    "政府は19日、新たな経済対策を閣議決定した。総額は約20兆円となる。",
    "札幌市の市民団体「緑の会」代表、高橋美咲さん（50）らが集めた署名約1万筆を市長に提出した。",
    "新型のロボット掃除機が発売された。価格は約5万円。Price: about 50,000 yen.",
]
MAX_NEW = 8
CASES = {SYSTEM: (ARTICLES, MAX_NEW), CHAT_SYSTEM: (CHATS, 20)}


@pytest.fixture(scope="module")
def gguf():
    return bundled_gguf()


@pytest.fixture(scope="module")
def gguf_q4km(gguf, tmp_path_factory):
    """The bundled model requantized to Q4_K_M, the quantize stage's type: its tensors use llama.cpp's
    repacked CPU kernels, whose rounding depends on how a batch's rows group (see Engine._align_cache)."""
    import ctypes

    import llama_cpp

    out = tmp_path_factory.mktemp("q4km") / "q4km.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.allow_requantize = True
    assert llama_cpp.llama_model_quantize(str(gguf).encode(), str(out).encode(), ctypes.byref(params)) == 0
    return out


def test_engine_equals_naive_loop_on_q4_k_m(gguf_q4km):
    llm = load_llama(gguf_q4km, n_ctx=1024, n_threads=2)
    reference = [naive_complete(llm, SYSTEM, a, MAX_NEW) for a in ARTICLES]
    fast = Engine(gguf_q4km, n_ctx=1024, n_threads=2, max_new_tokens=MAX_NEW, batch_size=1).complete(SYSTEM, ARTICLES)
    assert [(r.text, f.text) for r, f in zip(reference, fast) if not same_answer(r, f)] == []


@pytest.fixture(scope="module")
def naive(gguf):
    llm = load_llama(gguf, n_ctx=1024, n_threads=2)
    return {system: [naive_complete(llm, system, a, n) for a in texts] for system, (texts, n) in CASES.items()}


def same_answer(reference, fast, max_new=MAX_NEW):
    return llm_same_answer(reference, fast, max_new)


def test_prompt_is_the_gguf_chat_template(gguf):
    """The engine's prompt ids are llama-cpp-python's own render of the GGUF's template, tokenized as it does."""
    from jinmei.infer.engine import GgufChat

    llm = load_llama(gguf, n_ctx=512, n_threads=1)
    served = GgufChat(llm)
    rendered = Jinja2ChatFormatter(llm.metadata["tokenizer.chat_template"], eos_token=served.fmt.eos_token,
                                   bos_token=served.fmt.bos_token)(
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": ARTICLES[0]}]).prompt
    assert served.prompt_ids(SYSTEM, ARTICLES[0]) == llm.tokenize(rendered.encode(), add_bos=True, special=True)


@pytest.mark.parametrize("system", list(CASES))
def test_engine_equals_naive_loop(gguf, naive, system):
    texts, max_new = CASES[system]
    engine = Engine(gguf, n_ctx=1024, n_threads=2, max_new_tokens=max_new, batch_size=1)
    fast = engine.complete(system, texts)
    assert [c.prompt_tokens for c in fast] == [c.prompt_tokens for c in naive[system]]
    mismatches = [(r.text, f.text) for r, f in zip(naive[system], fast) if not same_answer(r, f, max_new)]
    assert not mismatches
    if system == CHAT_SYSTEM:                       # the end-of-turn path was exercised
        assert any(not c.truncated for c in fast)
    # the second pass hits the cached prompt prefix everywhere and still answers the same
    assert [c.text for c in engine.complete(system, texts)] == [c.text for c in fast]


def test_two_workers_equal_one(gguf, naive):
    fast = complete_all(gguf, SYSTEM, ARTICLES[:4], n_ctx=1024, n_threads=2, workers=2, max_new_tokens=MAX_NEW,
                        batch_size=1)
    assert all(same_answer(r, f) for r, f in zip(naive[SYSTEM][:4], fast))


def test_grammar_answers_are_schema_json_and_equal_naive(gguf):
    llm = load_llama(gguf, n_ctx=1024, n_threads=2)
    reference = [naive_complete(llm, SYSTEM, a, 40, grammar=answer_grammar(FIELDS)) for a in ARTICLES[:2]]
    engine = Engine(gguf, n_ctx=1024, n_threads=2, max_new_tokens=40, grammar_fields=FIELDS)
    fast = engine.complete(SYSTEM, ARTICLES[:2])
    assert [c.text for c in fast] == [c.text for c in reference]
    for c in fast:
        assert " " not in c.text.split('"')[0]        # no free whitespace before the first string
        verdict = judge(c.text, c.truncated, FIELDS)[1]
        assert verdict in ("ok", "truncated"), c.text


def test_grammar_allows_no_free_whitespace():
    gbnf = answer_grammar_text(FIELDS)
    assert 'space ::= ""' in gbnf and '" "?' not in gbnf
    assert all(f'\\"{f}\\"' in gbnf for f in FIELDS)


def test_article_longer_than_the_context_is_refused(gguf):
    engine = Engine(gguf, n_ctx=256, n_threads=2, max_new_tokens=64)
    with pytest.raises(JinmeiError, match="eval.n_ctx"):
        engine.complete(SYSTEM, ["東京" * 200])


def test_too_long_message_names_the_article_escaped_not_a_position(gguf):
    """Not `article #1` (a position in a worker's chunk): the article's opening words, escaped, on one line."""
    engine = Engine(gguf, n_ctx=256, n_threads=2, max_new_tokens=64)
    with pytest.raises(JinmeiError) as info:
        engine.complete(SYSTEM, [ARTICLES[0], "x\x1b[2J\n" + "東京" * 200])
    message = str(info.value)
    assert message.startswith("the article 'x\\x1b[2J\\n東京東京") and "(406 characters) needs " in message
    assert "more than eval.n_ctx=256" in message and "#1" not in message
    assert "\n" not in message and "\x1b" not in message


def test_batched_decode_runs_and_is_deterministic(gguf):
    """batch_size > 1 is documented as not bitwise identical to the naive loop; it must still be sane."""
    engine = Engine(gguf, n_ctx=1024, n_threads=2, max_new_tokens=MAX_NEW, batch_size=4)
    first = engine.complete(SYSTEM, ARTICLES[:6])
    again = engine.complete(SYSTEM, ARTICLES[:6])
    assert [c.text for c in first] == [c.text for c in again]
    assert all(c.generated_tokens <= MAX_NEW and (c.truncated == (c.generated_tokens == MAX_NEW) or not c.truncated)
               for c in first)
    assert json.dumps([c.text for c in first], ensure_ascii=False)


@pytest.fixture
def predict_params(tmp_path, monkeypatch):
    import yaml

    from jinmei.config.params import read_yaml
    from tiny_repo import ROOT, deep_merge

    params = {"schema": {"fields": FIELDS}, "prompt": {"system": SYSTEM}, "quantize": {"name": "x", "type": "Q4_K_M"},
              "eval": {"max_new_tokens": 80, "grammar": False, "n_ctx": 1024, "n_threads": 2}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(deep_merge(read_yaml(ROOT / "params.yaml"), params), allow_unicode=True),
                    encoding="utf-8")
    monkeypatch.setenv("JINMEI_PARAMS", str(path))
    return path


def test_predict_prints_the_json_answer(gguf, predict_params, tmp_path, capsys):
    from jinmei.infer import predict
    article = tmp_path / "article.txt"
    article.write_text("雨。\n", encoding="utf-8")
    predict.main([str(article), "--gguf", str(gguf), "--grammar"])
    value = json.loads(capsys.readouterr().out)
    assert judge(json.dumps(value, ensure_ascii=False, separators=(",", ":")), False, FIELDS)[1] == "ok"


def test_predict_refuses_an_unfinished_answer(gguf, predict_params, monkeypatch, capsys):
    import io

    from jinmei.infer import predict
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO("気象庁によると大雨。".encode()), encoding="utf-8"))
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--gguf", str(gguf), "--max-new-tokens", "6"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "truncated" in captured.err
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"  \n"), encoding="utf-8"))
    with pytest.raises(JinmeiError, match="empty article"):
        predict.main(["--gguf", str(gguf)])


def test_workers_auto_is_one_per_gpu_each_pinned():
    from jinmei.infer.engine import worker_devices

    assert worker_devices("auto", []) == [None]                      # CPU: one worker, as before
    assert worker_devices("auto", ["0", "1"]) == ["0", "1"]          # one per visible GPU
    assert worker_devices(3, ["0", "1"]) == ["0", "1", "0"]          # more workers than GPUs: round robin
    assert worker_devices(2, []) == [None, None]


def test_the_worker_loads_llama_cpp_before_numpy_and_never_torch():
    """The import order llama-cpp-python's CUDA build survives (jinmei/infer/llama_worker.py's docstring)."""
    import subprocess
    import sys

    probe = ("import sys, jinmei.infer.llama_worker, jinmei.infer.engine, jinmei.errors; m = list(sys.modules); "
             "print(m.index('llama_cpp.llama_cpp') < m.index('numpy'), 'torch' in m)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False"]


def test_a_worker_error_is_the_stage_error(tmp_path, gguf):
    """What the worker refuses (its JinmeiError) ends the stage with that same one line."""
    with pytest.raises(JinmeiError, match="missing.gguf"):
        complete_all(tmp_path / "missing.gguf", SYSTEM, ARTICLES[:2], n_ctx=1024, n_threads=2, workers="auto",
                     gpus=["1"], max_new_tokens=MAX_NEW, batch_size=1)
    with pytest.raises(JinmeiError, match="prompt \\+ 4000 answer tokens"):
        complete_all(gguf, SYSTEM, ARTICLES[:2], n_ctx=1024, n_threads=2, workers=1, max_new_tokens=4000,
                     batch_size=1)


def test_one_worker_reports_every_article_as_it_finishes(gguf, naive):
    """One worker decodes all articles in one call (prefix-sorted, one batch) and reports each one done."""
    seen = []
    answers = complete_all(gguf, SYSTEM, ARTICLES[:3], n_ctx=1024, n_threads=2, workers=1, max_new_tokens=MAX_NEW,
                           batch_size=1, progress=seen.append)
    assert seen == [1, 1, 1]
    assert all(same_answer(r, f) for r, f in zip(naive[SYSTEM][:3], answers))


def test_a_killed_worker_names_its_signal(monkeypatch):
    from jinmei.infer import engine
    from jinmei.infer.engine import _worker_death

    assert "pinned to GPU 1 was killed by SIGSEGV" in _worker_death(-11, "1")
    monkeypatch.setattr(engine, "_cuda_build", lambda: True)
    assert "CUDA build" in _worker_death(-11, "1")


def test_answers_do_not_depend_on_the_split_over_gpus(gguf, naive):
    """Two 'GPUs' on this CPU: two pinned workers, the same answers as one process (llama.cpp is CPU-only here)."""
    pinned = complete_all(gguf, SYSTEM, ARTICLES[:4], n_ctx=1024, n_threads=2, workers="auto", gpus=["0", "1"],
                          max_new_tokens=MAX_NEW, batch_size=1)
    assert all(same_answer(r, f) for r, f in zip(naive[SYSTEM][:4], pinned))
