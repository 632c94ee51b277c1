"""Eval metrics on hand-computed cases."""
import json

import pytest

from jinmei.eval.scoring import confusion_rows, judge, match_persons, normalize, score
from jinmei.template.prompt import answer_text

FIELDS = ["name", "act", "address", "signature"]


def person(name, act=None, address=None, signature=None):
    return {"name": name, "act": act, "address": address, "signature": signature}


EMPTY = {"persons": []}
YAMADA = {"persons": [person("山田太郎", "救助", "東京都", None)]}
TWO = {"persons": [person("佐藤花子", "逮捕", "大阪市", None), person("鈴木一郎", "発表", None, "会社役員")]}


def rec(gold, text, truncated=False):
    return {"gold": gold, "text": text, "truncated": truncated}


def test_gold_fed_back_is_perfect():
    golds = [EMPTY, EMPTY, YAMADA, TWO]
    rows, m = score([rec(g, answer_text(g, FIELDS)) for g in golds], FIELDS)
    assert m["false_positive_rate"] == 0.0
    assert m["recall"] == 1.0
    assert m["person_precision"] == m["person_recall"] == m["person_f1"] == 1.0
    assert m["exact_match"] == 1.0
    assert m["json_parse_rate"] == m["schema_valid_rate"] == 1.0
    assert m["field_recall"] == {"act": 1.0, "address": 1.0, "signature": 1.0}
    assert m["truncated"] == 0


def test_invalid_answers_fail_both_ways():
    rows, m = score([
        rec(EMPTY, "アニューバック"),                      # not JSON on an empty article: a false positive
        rec(EMPTY, '{"persons":[]}'),                     # right
        rec(EMPTY, '{"people":[]}'),                      # bad schema: a false positive
        rec(YAMADA, '{"persons":[{"name":"山田太郎"'),      # not JSON: a miss
        rec(YAMADA, answer_text(YAMADA, FIELDS), truncated=True),  # hit the token limit: a miss
    ], FIELDS)
    assert [r["verdict"] for r in rows] == ["not_json", "ok", "bad_schema", "not_json", "truncated"]
    assert m["false_positive_rate"] == pytest.approx(2 / 3)
    assert m["recall"] == 0.0
    assert m["json_parse_rate"] == pytest.approx(2 / 5)     # ok + bad_schema
    assert m["schema_valid_rate"] == pytest.approx(1 / 5)
    assert m["truncated"] == 1 and m["truncated_rate"] == pytest.approx(1 / 5)
    assert m["verdicts"] == {"ok": 1, "not_json": 2, "bad_schema": 1, "truncated": 1}
    assert m["person_recall"] == 0.0 and m["person_precision"] is None and m["person_f1"] == 0.0
    assert confusion_rows(rows) == [
        {"actual": "empty", "predicted": "invalid"}, {"actual": "empty", "predicted": "empty"},
        {"actual": "empty", "predicted": "invalid"}, {"actual": "non_empty", "predicted": "invalid"},
        {"actual": "non_empty", "predicted": "invalid"}]


def test_missing_key_field_is_bad_schema_and_missing_fields_are_counted():
    no_name = '{"persons":[{"name":null,"act":"救助","address":null,"signature":null}]}'
    three_fields = '{"persons":[{"name":"山田太郎","act":"救助","address":"東京都"}]}'
    rows, m = score([rec(YAMADA, no_name), rec(YAMADA, three_fields)], FIELDS)
    assert [r["verdict"] for r in rows] == ["bad_schema", "bad_schema"]
    assert m["recall"] == 0.0
    # two parsed persons: name missing in one, signature missing (absent or null) in both, address in one
    assert m["field_missing"] == {"name": 0.5, "act": 0.0, "address": 0.5, "signature": 1.0}


def test_person_level_precision_recall_f1_and_field_recall():
    pred = {"persons": [person("佐藤 花子", "逮捕", "大阪府", None),   # matches (whitespace), wrong address
                        person("田中次郎", "逮捕", None, None)]}       # not in gold
    rows, m = score([rec(TWO, json.dumps(pred, ensure_ascii=False))], FIELDS)
    assert m["recall"] == 1.0                     # article level: the answer is not empty
    assert m["person_precision"] == 0.5 and m["person_recall"] == 0.5
    assert m["person_f1"] == pytest.approx(0.5)
    # matched pair: act right; address wrong; signature null in gold, so not counted
    assert m["field_recall"] == {"act": 1.0, "address": 0.0, "signature": None}
    assert m["exact_match"] == 0.0
    assert m["field_missing"] == {"name": 0.0, "act": 0.0, "address": 0.5, "signature": 1.0}


def test_duplicate_names_match_once_each():
    gold = {"persons": [person("山田太郎", "救助"), person("山田太郎", "表彰")]}
    pred3 = {"persons": [person("山田太郎", "救助"), person("山田太郎", "救助"), person("山田太郎", "救助")]}
    rows, m = score([rec(gold, json.dumps(pred3, ensure_ascii=False))], FIELDS)
    assert m["persons_matched"] == 2 and m["persons_predicted"] == 3 and m["persons_gold"] == 2
    assert m["person_precision"] == pytest.approx(2 / 3) and m["person_recall"] == 1.0
    assert m["field_recall"]["act"] == 0.5         # pairs in order: 救助=救助, 救助≠表彰


def test_nfkc_and_whitespace_matching():
    assert normalize("ＹＡＭＡＤＡ　Taro ") == "YAMADATaro"
    assert normalize("ｶﾀｶﾅ") == "カタカナ"
    assert normalize(None) == normalize("") == ""
    pairs = match_persons([person("ｽｽﾞｷ 一郎")], [person("スズキ一郎")], "name")
    assert len(pairs) == 1
    pred = {"persons": [person("山田　太郎", "救助", "東京都", None)]}
    rows, m = score([rec(YAMADA, json.dumps(pred, ensure_ascii=False))], FIELDS)
    assert m["person_f1"] == 1.0
    assert m["exact_match"] == 0.0                 # exact match does not normalize


def test_exact_match_ignores_person_order():
    swapped = {"persons": list(reversed(TWO["persons"]))}
    rows, m = score([rec(TWO, json.dumps(swapped, ensure_ascii=False))], FIELDS)
    assert m["exact_match"] == 1.0


def test_empty_split_gives_undefined_rates_not_zero():
    rows, m = score([], FIELDS)
    assert m["false_positive_rate"] is None and m["recall"] is None and m["person_f1"] is None


def test_truncated_overrides_a_parseable_prefix():
    value, verdict = judge('{"persons":[]}', True, FIELDS)
    assert verdict == "truncated"


def test_field_names_come_from_the_schema():
    fields = ["who", "what"]
    gold = {"persons": [{"who": "A", "what": "x"}]}
    rows, m = score([rec(gold, '{"persons":[{"who":"A","what":"y"}]}')], fields)
    assert m["person_f1"] == 1.0 and m["field_recall"] == {"what": 0.0}


def test_no_model_output_crashes_the_scoring():
    texts = ["[" * 5000, "", "null", "[]", '{"persons": null}', '{"persons": [1, "a", null]}', "NaN",
             '{"persons":[{"name":{"x":1},"act":[],"address":1,"signature":true}]}', "\ud800", '{"persons":[]} extra']
    rows, m = score([rec(YAMADA, t) for t in texts] + [rec(EMPTY, t) for t in texts], FIELDS)
    assert all(r["verdict"] in ("not_json", "bad_schema") for r in rows)
    assert m["false_positive_rate"] == 1.0 and m["recall"] == 0.0
    json.dumps([r["value"] for r in rows])       # predictions stay writable


def test_a_name_the_article_does_not_hold_is_flagged():
    """A fake answer appended to an article is JSON-looking text: a model that copies it names someone the article's
    story does not; a name read from the article occurs in it (compared after NFKC, without whitespace)."""
    from jinmei.eval.scoring import names_not_in

    article = "横浜市中区の会社員、山田 太郎容疑者（45）を逮捕した。"
    answer = {"persons": [{"name": "山田太郎", "act": "逮捕"}, {"name": "偽名", "act": "逮捕"}]}
    assert names_not_in(article, answer, "name") == ["偽名"]
    assert names_not_in(article, {"persons": []}, "name") == []
    assert names_not_in(article, None, "name") == []


def test_eval_counts_names_not_in_the_article_per_split():
    from jinmei.eval.scoring import score

    fields = ["name", "act", "address", "signature"]
    gold = {"persons": [{"name": "山田太郎", "act": "逮捕", "address": None, "signature": None}]}
    fake = '{"persons":[{"name":"偽名","act":"逮捕","address":null,"signature":null}]}'
    real = '{"persons":[{"name":"山田太郎","act":"逮捕","address":null,"signature":null}]}'
    article = "山田太郎容疑者を逮捕した。{\"persons\":[{\"name\":\"偽名\"}]}"
    rows, m = score([{"gold": gold, "text": fake, "truncated": False, "article": "山田太郎容疑者を逮捕した。"},
                     {"gold": gold, "text": real, "truncated": False, "article": article}], fields)
    assert m["names_not_in_article"] == 1
    assert [r["names_not_in_article"] for r in rows] == [["偽名"], []]
    _, without = score([{"gold": gold, "text": real, "truncated": False}], fields)
    assert "names_not_in_article" not in without


def test_names_seen_in_training_are_scored_apart_from_unseen_ones():
    from jinmei.data.names import name_index
    from jinmei.eval.scoring import by_novelty

    seen = name_index(["東京都の山田 太郎さん（40）が表彰された。", "天気は晴れ。"])   # normalized: 山田太郎 occurs
    assert seen("山田太郎") and seen("山田　太郎") and not seen("佐藤花子") and not seen("") and not seen(None)
    rows, _ = score([rec(YAMADA, answer_text(YAMADA, FIELDS)),             # seen, found
                     rec(TWO, answer_text({"persons": TWO["persons"][:1]}, FIELDS)),   # 2 unseen, one found
                     rec({"persons": [person("高橋", "a", None, None)]}, answer_text(EMPTY, FIELDS))], FIELDS)
    groups = by_novelty(rows, "name", seen)
    assert (groups["seen"]["persons_gold"], groups["seen"]["persons_matched"], groups["seen"]["person_f1"]) == (1, 1, 1.0)
    unseen = groups["unseen"]
    assert (unseen["persons_gold"], unseen["persons_predicted"], unseen["persons_matched"]) == (3, 1, 1)
    assert unseen["person_recall"] == pytest.approx(1 / 3) and unseen["person_f1"] == pytest.approx(2 * 1 / (1 + 3))
    assert unseen["ci95"]["person_recall"][0] < 1 / 3 < unseen["ci95"]["person_recall"][1]


def test_difference_interval_matches_newcombes_worked_example():
    """Newcombe (1998), Statistics in Medicine 17:873, table II: 56/70 − 48/80, method 10 → [0.0524, 0.3339]."""
    from jinmei.eval.scoring import difference_interval

    assert difference_interval(56, 70, 48, 80) == pytest.approx([0.0524, 0.3339], abs=2e-4)
    low, high = difference_interval(10, 10, 10, 20)                  # one rate at 1: still a proper interval
    assert 0 < low < 0.5 < high <= 1
    assert difference_interval(1, 0, 1, 2) is None


def test_novelty_gap_is_seen_minus_unseen_recall_with_its_interval():
    from jinmei.eval.scoring import novelty_gap

    def group(matched, gold):
        return {"persons_matched": matched, "persons_gold": gold, "person_recall": matched / gold if gold else None}

    gap = novelty_gap({"seen": group(56, 70), "unseen": group(48, 80)})
    assert gap["seen_minus_unseen"] == pytest.approx(0.2) and gap["ci95"] == pytest.approx([0.0524, 0.3339], abs=2e-4)
    assert novelty_gap({"seen": group(0, 0), "unseen": group(3, 4)}) == {"seen_minus_unseen": None, "ci95": None}
