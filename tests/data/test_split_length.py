"""Length is settled at split, before any training: every dev article's prompt (base tokenizer + chat template, as
eval renders it) and gold answer are measured against eval.n_ctx / eval.max_new_tokens, and split.too_long decides.

A 1,200-character article (about 2,380 SmolLM2 prompt tokens, more than eval.n_ctx 2048 - max_new_tokens 256) used to pass
split, and eval refused the whole run after hours of training."""
from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import yaml

from jinmei.config.params import declared, read_yaml
from jinmei.data import splitting as split
from jinmei.data.demo import generate
from jinmei.errors import JinmeiError
from jinmei.files import write_jsonl
from jinmei.model.basemodel import load_tokenizer
from stages import split as split_stage
from tiny_repo import deep_merge

REPO = Path(__file__).resolve().parents[2]
SPLIT = {"dev_all_size": 100, "dev_all_positive_share": 0.2, "dev_positive_size": 30, "sanity_size": 8}
SEED = 7
LEAD = "横浜市中区の会社員、山田太郎容疑者（45）を窃盗の疑いで逮捕した。"
FILLER = "県警によると、現場付近では以前から同様の被害が相次いでおり、署は防犯カメラの映像を調べるなどして捜査を続けている。"
YAMADA = {"name": "山田太郎", "act": "逮捕", "address": "横浜市中区", "signature": None}
CREDIT = "（撮影・佐藤花子）"
SATO = {"name": "佐藤花子", "act": "撮影", "address": None, "signature": None}
ROWS = 600  # the demo corpus: the planted article is on line 601


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A tmp repository root with its own params.yaml (eval.n_ctx 2048, max_new_tokens 256: the demo's)."""
    params = deep_merge(read_yaml(REPO / "params.yaml"), {"seed": SEED, "split": dict(SPLIT)})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    monkeypatch.setenv("JINMEI_PARAMS", str(tmp_path / "params.yaml"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def budget():
    params = read_yaml(REPO / "params.yaml")
    return split.EvalBudget(load_tokenizer(params["base"]["model"]), params["prompt"]["system"],
                            params["schema"]["fields"], params["eval"]["n_ctx"], params["eval"]["max_new_tokens"])


def set_params(workdir: Path, section: str, **changes) -> None:
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params[section].update(changes)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")


def run(workdir: Path) -> dict:
    split_stage.main(["--corpus", str(workdir / "corpus.jsonl"), "--out-dir", str(workdir / "splits"),
                      "--metrics", str(workdir / "split.json")])
    return json.loads((workdir / "split.json").read_text())


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def files(workdir: Path) -> dict[str, list[dict]]:
    return {name: read(workdir / "splits" / f"{name}.jsonl") for name in split.FILES}


def long_text(k: int, chars: int = 1200, lead: str = LEAD, tail: str = "") -> str:
    return (lead + f"事件は{k}日に発覚した。" + FILLER * 40)[: chars - len(tail)] + tail


def plant(workdir: Path, make, persons: list[dict], where: str = "dev", article_id: str = "long-1") -> dict:
    """The demo corpus plus one article on line 601 that the seeded order puts in a dev set (or in training):
    make(k) varies the text until it lands there."""
    rows = generate(ROWS, 0.25, seed=3)
    view = types.SimpleNamespace(**SPLIT)
    for k in range(1, 200):
        article = {"id": article_id, "text": make(k), "output": {"persons": persons}}
        cut = split.cut(rows + [article], view, SEED)
        dev = {r["id"] for r in cut["dev_all"] + cut["dev_positive"]}
        train = {r["id"] for r in cut["train_positive"] + cut["train_empty"]}
        if article_id in (dev if where == "dev" else train):
            write_jsonl(workdir / "corpus.jsonl", rows + [article])
            return article
    raise AssertionError("no variant landed there")


def test_split_declares_the_eval_params_it_reads():
    keys = declared("split", REPO / "dvc.yaml")
    assert {"eval.n_ctx", "eval.max_new_tokens", "prompt.system", "split"} <= set(keys)


def test_budget_counts_the_prompt_ids_llama_cpp_serves(budget):
    """split measures exactly what eval decodes: the GGUF engine's own prompt ids for the same system and article."""
    from jinmei.infer.engine import GgufChat, load_llama
    from jinmei.model.basemodel import bundled_gguf_path

    served = GgufChat(load_llama(bundled_gguf_path(), n_ctx=512, n_threads=1))
    for article in (LEAD, long_text(3), "Tokyo 東京 123\n二行目。", LEAD + CREDIT):
        assert budget.prompt_tokens(article) == len(served.prompt_ids(budget.system, article))


def test_1200_character_dev_article_is_refused_at_split(workdir, budget):
    article = plant(workdir, long_text, [YAMADA])
    assert len(article["text"]) == 1200 and budget.measure(article)[0] > budget.prompt_budget
    with pytest.raises(JinmeiError) as info:
        run(workdir)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{workdir / 'corpus.jsonl'}: 1 dev article(s) do not fit eval's budget")
    assert f"line {ROWS + 1} id 'long-1': {budget.measure(article)[0]} prompt tokens (of 1792 = eval.n_ctx 2048" in message
    assert "1200 characters" in message
    assert f"eval.n_ctx >= {budget.measure(article)[0] + 256}" in message
    assert "split.too_long: cut" in message and "drop" in message and "keep" in message
    assert not (workdir / "splits").exists() and not (workdir / "split.json").exists(), "nothing written"


def test_refused_also_with_a_local_base_folder(workdir, tiny_base):
    """base.model a HF folder (the tiny base: the real SmolLM2 tokenizer and template)."""
    set_params(workdir, "base", model=str(tiny_base))
    plant(workdir, long_text, [YAMADA])
    with pytest.raises(JinmeiError, match=f"line {ROWS + 1} id 'long-1': 2[0-9]{{3}} prompt tokens"):
        run(workdir)


def test_long_training_article_is_left_to_train_too_long(workdir):
    """Only dev articles meet eval; a long training article is train.too_long's (base.max_seq_length)."""
    article = plant(workdir, long_text, [YAMADA], where="train")
    metrics = run(workdir)
    assert article in files(workdir)["train_positive"]
    assert metrics["dev_too_long"] == 0 and metrics["dev_prompt_tokens_max"] <= 1792


def test_cut_shortens_the_dev_article_and_keeps_its_labels(workdir, budget, capsys):
    article = plant(workdir, long_text, [YAMADA])
    set_params(workdir, "split", too_long="cut")
    metrics = run(workdir)
    got = files(workdir)
    dev = {r["id"]: r for r in got["dev_all"] + got["dev_positive"]}
    cut = dev["long-1"]["text"]
    assert article["text"].startswith(cut) and len(cut) < 1200
    assert cut.endswith("。"), "ends at a sentence end"
    assert all(v in cut for v in ("山田太郎", "逮捕", "横浜市中区")), "every gold label stays extractable"
    assert dev["long-1"]["output"] == article["output"], "the answer is never cut"
    assert budget.prompt_tokens(cut) <= budget.prompt_budget
    assert (len(got["dev_all"]), len(got["dev_positive"])) == (100, 30)
    assert metrics["dev_too_long"] == metrics["dev_too_long_cut"] == 1 and metrics["dev_too_long_dropped"] == 0
    assert metrics["oddities"]["too_long"]["examples"] == ["long-1"]
    assert metrics["dev_prompt_tokens_max"] <= 1792
    out = capsys.readouterr().out
    assert f"cut 1 dev article(s) to fit eval.n_ctx=2048 (the answer never), e.g. line {ROWS + 1} id 'long-1' 1200 -> " \
           f"{len(cut)} characters" in out


def test_cut_drops_an_article_whose_name_would_be_cut_away(workdir):
    """The only gold name is a credit at the end: no prefix that fits keeps it, so the article is dropped (counted),
    never kept with a label the model cannot see."""
    plant(workdir, lambda k: long_text(k, lead="", tail=CREDIT), [SATO], article_id="credit-1")
    set_params(workdir, "split", too_long="cut")
    metrics = run(workdir)
    kept = {r["id"] for rows in files(workdir).values() for r in rows}
    assert "credit-1" not in kept
    assert metrics["dev_too_long_dropped"] == 1 and metrics["dev_too_long_cut"] == 0
    assert metrics["oddities"]["too_long"]["dropped_because"] == {"label": 1}
    assert (metrics["dev_all_count"], metrics["dev_positive_count"]) == (100, 30), "dev sets keep their sizes"


def test_drop_leaves_it_out_and_counts_it(workdir, capsys):
    plant(workdir, long_text, [YAMADA])
    set_params(workdir, "split", too_long="drop")
    metrics = run(workdir)
    assert "long-1" not in {r["id"] for rows in files(workdir).values() for r in rows}
    assert metrics["dev_too_long"] == metrics["dev_too_long_dropped"] == 1
    assert (metrics["dev_all_count"], metrics["dev_positive_count"]) == (100, 30), "dev sets keep their sizes"
    assert f"left out 1 dev article(s) that do not fit: line {ROWS + 1} id 'long-1'" in capsys.readouterr().out


def test_keep_keeps_it_and_says_eval_scores_it_as_a_failure(workdir, capsys):
    article = plant(workdir, long_text, [YAMADA])
    set_params(workdir, "split", too_long="keep")
    metrics = run(workdir)
    got = files(workdir)
    assert article in got["dev_all"] + got["dev_positive"]
    assert metrics["dev_too_long"] == metrics["dev_too_long_kept"] == 1
    warning = [line for line in capsys.readouterr().out.splitlines() if "split.too_long: keep" in line]
    assert len(warning) == 1 and f"line {ROWS + 1} id 'long-1'" in warning[0]
    assert "eval scores them as failures" in warning[0] and "eval.n_ctx >= " in warning[0]


def many_persons_article(k: int) -> tuple[str, list[dict]]:
    names = ["山田太郎", "佐藤花子", "鈴木一郎", "高橋美咲", "田中健太", "伊藤直子", "渡辺浩二", "中村由美"]
    places = ["東京都世田谷区", "神奈川県横浜市中区", "大阪府大阪市北区", "愛知県名古屋市中村区",
              "福岡県福岡市博多区", "北海道札幌市中央区", "宮城県仙台市青葉区", "広島県広島市南区"]
    text = f"県警は{k}日、" + "、".join(f"{p}の会社員{n}容疑者" for n, p in zip(names, places)) + "の8人を詐欺の疑いで逮捕した。"
    return text, [{"name": n, "act": "逮捕", "address": p, "signature": None} for n, p in zip(names, places)]


def test_gold_answer_longer_than_max_new_tokens_is_refused(workdir, budget):
    """An 8-person answer cannot be written in eval.max_new_tokens 256: eval could only count it as truncated."""
    persons = many_persons_article(1)[1]
    article = plant(workdir, lambda k: many_persons_article(k)[0], persons, article_id="eight")
    prompt, answer = budget.measure(article)
    assert prompt <= budget.prompt_budget and answer > 255
    with pytest.raises(JinmeiError) as info:
        run(workdir)
    message = str(info.value)
    assert f"line {ROWS + 1} id 'eight': a {answer}-token gold answer (eval.max_new_tokens=256 holds 255" in message
    assert f"eval.max_new_tokens >= {answer + 1}" in message
    set_params(workdir, "split", too_long="cut")        # cutting the text cannot shorten the answer: dropped
    metrics = run(workdir)
    assert metrics["oddities"]["too_long"]["dropped_because"] == {"answer": 1}
