"""metrics/errors.md on hand-built prediction rows: known counts per kind, the names in bold, every untrusted text
escaped (an article cannot break the table, inject HTML or reach the terminal with an ESC), at most `per_kind`
examples, and a long article cut around the name with a said "…"."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from jinmei.config.params import parse, read_yaml
from jinmei.eval import errors, evaluation
from jinmei.infer import engine as llm

FIELDS = ["name", "act", "address", "signature"]
REPO = Path(__file__).resolve().parents[2]


def person(name, act=None, address=None, signature=None):
    return {"name": name, "act": act, "address": address, "signature": signature}


def row(article_id, text, gold, answer=None, verdict="ok", raw=None, too_long=False):
    """A prediction row as evaluation.prediction_row writes it (answer: the persons of an ok answer)."""
    parsed = {"persons": answer or []} if verdict == "ok" else None
    return {"id": article_id, "verdict": verdict, "exact": False, "parsed": parsed,
            "raw": raw if raw is not None else json.dumps(parsed, ensure_ascii=False), "gold": {"persons": gold},
            "truncated": verdict == "truncated", "too_long": too_long, "text": text}


YAMADA = person("山田太郎", "表彰", "横浜市中区", None)
SATO = person("佐藤花子", "逮捕", "大阪市", None)
ROWS = [
    row("ok-empty", "日経平均株価は続伸した。", []),
    row("fp-man", "男が店に押し入った。", [], [person("男", "強盗", None, None)]),
    row("fp-broken", "プロ野球の試合は中止となった。", [], verdict="not_json", raw="アニューバック"),
    row("right", "横浜市中区の会社員、山田太郎さんが表彰された。", [YAMADA], [YAMADA]),
    row("missed-one", "山田太郎さんと佐藤花子さんが会見した。", [YAMADA, SATO], [YAMADA]),
    row("wrong-act", "大阪市の佐藤花子容疑者が逮捕された。", [SATO], [person("佐藤花子", "送検", "大阪市", None)]),
    row("truncated", "佐藤花子さんが発表した。", [SATO], verdict="truncated", raw='{"persons": [{"name": "佐藤'),
    row("too-long", "長い記事。" * 10, [], verdict="truncated", raw="", too_long=True),
]


def section(page: str, title: str) -> str:
    """The text of one `### title...` section, up to the next ### or ##."""
    match = re.search(rf"^### {re.escape(title)}.*?(?=^#{{2,3}} |\Z)", page, re.S | re.M)
    assert match, f"no section {title!r} in\n{page}"
    return match.group(0)


def test_counts_per_kind():
    page = errors.report({"dev_all": ROWS}, FIELDS)
    assert "## dev_all (8 articles)" in page
    assert "| 3 of 4 articles without persons |" in page                  # fp-man, fp-broken, too-long
    assert "| 2 of 5 gold persons, in 2 article(s) |" in page               # 佐藤 in missed-one, truncated
    assert "| 1 of 3 named persons, in 1 article(s) |" in page              # wrong-act
    assert "| 3 of 8 (1 / 0 / 2, 1 of them not decoded: too long for eval.n\\_ctx) |" in page
    assert "### False positives: 3 article(s)\n" in page
    assert "### Missed persons: 2 article(s)\n" in page
    assert "### Wrong fields: 1 article(s)\n" in page
    assert "### Invalid answers: 3 article(s)\n" in page


def test_name_errors_say_how_a_name_went_wrong():
    text = "長崎県士族・石橋常七の長男で、山田太郎氏と佐藤花子さんの友人、小山晃吉と美秀子の子。"
    gold = [person(n) for n in ("石橋常七", "山田太郎", "佐藤花子", "小山晃吉", "美秀", "鈴木一郎")]
    answer = [person(n) for n in ("長崎県士", "族・石橋常", "山田太郎氏", "佐藤", "小山晃吉", "山本五十六")]
    kinds = row("kinds", text, gold, answer)
    counts = errors.name_errors(kinds, errors.analyse(kinds, FIELDS), "name")
    assert counts == {"cut_short": 1, "extended": 1, "overlapping": 1, "not_a_name": 1, "not_in_article": 1,
                      "missed": 2}                                      # 美秀, 鈴木一郎
    total = errors.name_error_counts(ROWS, FIELDS)                    # an invalid answer names nobody
    assert total == {"cut_short": 0, "extended": 0, "overlapping": 0, "not_a_name": 1, "not_in_article": 0,
                     "missed": 2}                                       # 男 in fp-man; 佐藤花子 twice
    page = errors.report({"dev_all": ROWS}, FIELDS)
    assert "| not a name: an answer name that occurs in the article and overlaps no gold name | 1 |" in page


def test_examples_name_the_row_and_id_and_show_gold_beside_the_answer():
    page = errors.report({"dev_all": ROWS, "dev_positive": ROWS[3:6]}, FIELDS)
    fp = section(page, "False positives")
    assert "#### dev_all row 2, id fp-man" in fp
    assert "> **男**が店に押し入った。" in fp                         # the answer's name, in bold
    assert "| *nobody* | 男 · act: 強盗 · address: null · signature: null |" in fp
    assert "| *nobody* | *not\\_json*: アニューバック |" in fp
    assert "| *nobody* | *truncated*: not decoded, the prompt does not fit eval.n\\_ctx |" in fp
    missed = section(page, "Missed persons")
    assert "> 山田太郎さんと**佐藤花子**さんが会見した。" in missed        # only the missed name is bold
    assert "| 山田太郎 · act: 表彰 · address: 横浜市中区 · signature: null | 山田太郎 · act: 表彰" in missed
    assert "| 佐藤花子 · act: 逮捕 · address: 大阪市 · signature: null | — |" in missed
    wrong = section(page, "Wrong fields")
    assert ("| 佐藤花子 · **act: 逮捕** · address: 大阪市 · signature: null | 佐藤花子 · **act: 送検** · "
            "address: 大阪市 · signature: null |") in wrong
    assert "## dev_positive (3 articles)" in page


def test_name_is_found_as_scoring_matches_it():
    """A gold 山田 太郎 (space) is 山田太郎 in the article: found and bolded as the article writes it."""
    spans = errors.name_spans("会社員の山田太郎さん、ＹＡＭＡＤＡさん", ["山田 太郎", "YAMADA"])
    assert spans == [(4, 8), (11, 17)]
    assert errors.article_block("会社員の山田太郎さん", ["山田 太郎"]) == ["> 会社員の**山田太郎**さん"]
    assert "鈴木 does not occur in the article" in "\n".join(errors.article_block("会社員の山田太郎さん", ["鈴木"]))


@pytest.mark.parametrize("text, shown", [
    ("a|b", "a\\|b"),
    ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
    ("x & y", "x &amp; y"),
    ("\x1b[2Jclear", "⟨U+001B⟩\\[2Jclear"),
    ("line1\nline2\r\n# heading", "line1 ⏎ line2  ⏎ \\# heading"),
    ("*bold* _it_ `code` [link](u) ~s~", "\\*bold\\* \\_it\\_ \\`code\\` \\[link\\](u) \\~s\\~"),
    ("rtl\u202eevil", "rtl⟨U+202E⟩evil"),
    ("back\\slash", "back\\\\slash"),
])
def test_escape(text, shown):
    assert errors.escape(text) == shown


def test_an_article_cannot_break_the_page():
    """Specials in the article, the id, the gold and the answer: one quote line, every table row has two cells."""
    nasty = "| x | y |\n> quote\n- item\n<b>bold</b>\x1b[31mred\x1b[0m\u2028"
    rows = [row("id|\x1b[2J\nx", "1. " + nasty + "山田太郎", [person("山田太郎", act="a|b<c>\x1b")], [],),
            row("2", "- " + nasty, [], verdict="not_json", raw="}|\x1b[2J\n<i>")]
    page = errors.report({"dev_all": rows}, FIELDS)
    assert "\x1b" not in page and "\u2028" not in page and "\r" not in page
    assert "<b>" not in page and "<i>" not in page
    assert "#### dev_all row 1, id id\\|⟨U+001B⟩\\[2J ⏎ x" in page
    assert "> 1\\. \\| x \\| y \\| ⏎ &gt; quote ⏎ - item ⏎ &lt;b&gt;bold&lt;/b&gt;⟨U+001B⟩\\[31mred" in page
    assert "> \\- \\| x" in page
    for line in page.splitlines():
        if line.startswith("| ") and not line.startswith("| kind"):
            assert len(re.findall(r"(?<!\\)\|", line)) == 3, line     # | cell | cell |: no cell split in two
    assert "act: a\\|b&lt;c&gt;⟨U+001B⟩" in page
    assert "*not\\_json*: }\\|⟨U+001B⟩\\[2J ⏎ &lt;i&gt;" in page


def test_at_most_per_kind_examples_in_file_order():
    rows = [row(f"fp{i:02d}", f"記事{i}。男が現れた。", [], [person("男")]) for i in range(12)]
    page = errors.report({"dev_all": rows}, FIELDS, per_kind=3)
    assert "### False positives: 12 article(s), the first 3 shown" in page
    assert re.findall(r"^#### .*$", page, re.M) == [f"#### dev_all row {i}, id fp0{i - 1}" for i in (1, 2, 3)]
    assert errors.report({"dev_all": rows}, FIELDS) == errors.report({"dev_all": rows}, FIELDS)   # deterministic
    assert len(re.findall(r"^#### ", errors.report({"dev_all": rows}, FIELDS), re.M)) == errors.PER_KIND == 5


def test_long_article_is_cut_around_the_name_and_says_so():
    text = "あ" * 1000 + "山田太郎" + "い" * 1000
    block = errors.article_block(text, ["山田太郎"], limit=300)
    quote = block[0]
    assert quote.startswith("> …あ") and quote.endswith("い…")
    assert "**山田太郎**" in quote
    assert len(quote) < 320
    assert block[2] == "*article cut to characters 901–1200 of 2004 (… marks each cut)*"
    start = errors.article_block("山田太郎" + "い" * 500, ["山田太郎"], limit=100)
    assert start[0].startswith("> **山田太郎**いい") and start[0].endswith("い…")       # no cut before: no …
    assert "characters 1–100 of 504" in start[2]
    assert errors.article_block("短い記事。", [], limit=100) == ["> 短い記事。"]          # short: whole, no note


def test_long_answer_and_many_persons_are_bounded():
    rows = [row("loop", "男が現れた。", [], [person(f"男{i}") for i in range(30)]),
            row("garbage", "記事。", [], verdict="not_json", raw="x" * 2000)]
    page = errors.report({"dev_all": rows}, FIELDS)
    assert f"| … {30 - errors.PERSON_ROWS} more row(s) not shown |  |" in page
    assert "x" * errors.ANSWER_CHARS + "… *(first 300 of 2000 characters)*" in page
    assert "x" * (errors.ANSWER_CHARS + 1) not in page
    assert len(page) < 6000


def test_rows_without_text_still_report():
    bare = {k: v for k, v in ROWS[1].items() if k != "text"}
    assert "*(the prediction row holds no article text)*" in errors.report({"dev_all": [bare]}, FIELDS)


def test_eval_run_writes_the_page_beside_the_advice(tmp_path, monkeypatch):
    """evaluation.run with the decoding replaced: the prediction rows hold the article text and metrics/errors.md is
    written next to advice.md."""
    raw = read_yaml(REPO / "params.yaml")
    raw["eval"].update(compare_subset=0, workers=1)
    p = parse(raw)
    splits = tmp_path / "splits"
    splits.mkdir()
    articles = {"dev_all": [("e1", "男が店に押し入った。", [])], "dev_positive": [("p1", "山田太郎さんが表彰された。", [YAMADA])],
                "sanity": [], "train_positive": [], "train_empty": []}
    for name, items in articles.items():
        (splits / f"{name}.jsonl").write_text("".join(json.dumps({"id": i, "text": t, "output": {"persons": g}},
                                                                 ensure_ascii=False) + "\n" for i, t, g in items))
    answer = json.dumps({"persons": [person("男", "強盗")]}, ensure_ascii=False)
    monkeypatch.setattr(evaluation, "over_budget", lambda *a, **k: {})
    monkeypatch.setattr(evaluation, "decode_gguf", lambda gguf, system, texts, ev, fields: (
        {t: llm.Completion(text=answer, prompt_tokens=10, generated_tokens=5, truncated=False) for t in texts},
        {"articles": len(set(texts)), "seconds": 1.0, "articles_per_s": 1.0, "prompt_tokens_per_s": 1.0,
         "generated_tokens_per_s": 1.0, "prompt_tokens": 10, "generated_tokens": 5}))
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    out = tmp_path / "out"
    evaluation.run(p, gguf=tmp_path / "model.gguf", splits_dir=splits, base=tmp_path / "base", stage1=tmp_path / "s1",
                   merged=tmp_path / "m", metrics_file=out / "eval.json", details_file=out / "details" / "eval.json",
                   predictions_dir=out / "predictions", plots_dir=out / "plots", advice_file=out / "advice.md",
                   errors_file=out / "errors.md", stage1_metrics=out / "s1.json", stage2_metrics=out / "s2.json")
    predicted = json.loads((out / "predictions" / "dev_all.jsonl").read_text(encoding="utf-8"))
    assert predicted["text"] == "男が店に押し入った。"
    page = (out / "errors.md").read_text(encoding="utf-8")
    assert "> **男**が店に押し入った。" in page and "## dev_positive (1 articles)" in page
    assert not list(out.glob(".errors.md.tmp-*"))
