"""Each advice rule fires on hand-made metrics, with commands computed from the current params."""
import copy

import yaml

from jinmei.eval import advice
from jinmei.eval.advice import num
from jinmei.config.params import parse, read_yaml
from tiny_repo import ROOT, deep_merge

COMMITTED = read_yaml(ROOT / "params.yaml")


def advise(metrics, params, *rest):
    """jinmei.eval.advice.advise with these test values over the committed params.yaml, typed as a stage gets them."""
    return advice.advise(metrics, parse(deep_merge(COMMITTED, params)), *rest)

PARAMS = yaml.safe_load("""
stage2: {size: 256, positive_ratio: 0.10, epochs: 0.5, lr: 1.0e-4}
quantize: {type: Q4_K_M, name: jinmei}
eval: {max_new_tokens: 256, grammar: false, recall_drop_margin: 0.05, quant_drop_margin: 0.05,
       max_false_positive_rate: 0.05, min_parse_rate: 0.95}
""")


def good_metrics():
    return {
        "dev_all": {"false_positive_rate": 0.01, "schema_valid_rate": 0.99, "json_parse_rate": 1.0, "truncated": 0,
                    "recall": 0.9},
        "dev_positive": {"recall": 0.9, "person_f1": 0.8},
        "compare": {"n": 20, "stage1": {"recall": 0.9}, "merged": {"recall": 0.9}, "gguf": {"recall": 0.88}},
    }


def test_all_good_says_so():
    text = advise(good_metrics(), PARAMS, {"first_loss": 2.0, "last_loss": 0.1}, good_metrics())
    assert "All checks pass" in text and "dvc exp run" not in text
    assert "recall kept through stage2 and quantization on the 20-article compare subset" in text


def test_all_good_without_a_compare_claims_nothing_about_stage2():
    m = good_metrics()
    del m["compare"]
    text = advise(m, PARAMS)
    assert "All checks pass" in text and "kept through" not in text
    assert "recall through stage2 and quantization not measured (eval.compare_subset is 0)" in text


def test_stage2_recall_drop_gives_the_three_steps_in_order():
    m = good_metrics()
    m["compare"]["merged"]["recall"] = 0.80
    m["compare"]["gguf"]["recall"] = 0.80
    text = advise(m, PARAMS)
    a = text.index("dvc exp run -S stage2.epochs=0.25")
    b = text.index("dvc exp run -S stage2.lr=5e-05")
    c = text.index("dvc exp run -S stage2.positive_ratio=0.15")
    assert a < b < c
    assert "quantization" not in text
    sweep = text[c:]
    for line in ("dvc exp run --queue -n stage2-epochs-0.25 -S stage2.epochs=0.25",
                 "dvc exp run --queue -n stage2-lr-5e-05 -S stage2.lr=5e-05",
                 "dvc exp run --queue -n stage2-positive-ratio-0.15 -S stage2.positive_ratio=0.15",
                 "dvc queue start",
                 "jinmei-compare workspace stage2-epochs-0.25 stage2-lr-5e-05 stage2-positive-ratio-0.15"):
        assert line in sweep, line


def test_commands_follow_the_current_params():
    params = copy.deepcopy(PARAMS)
    params["stage2"].update(epochs=0.25, lr=5e-4, positive_ratio=0.15)
    m = good_metrics()
    m["compare"]["merged"]["recall"] = 0.5
    m["compare"]["gguf"]["recall"] = 0.5
    text = advise(m, params)
    assert "stage2.epochs=0.125" in text and "stage2.lr=0.00025" in text and "stage2.positive_ratio=0.2" in text


def test_drop_within_margin_is_quiet():
    m = good_metrics()
    m["compare"]["merged"]["recall"] = 0.86         # 0.04 < 0.05
    assert "All checks pass" in advise(m, PARAMS)


def test_stage1_overfitting_needs_falling_recall_and_falling_loss():
    m, before = good_metrics(), good_metrics()
    m["dev_positive"]["recall"] = 0.7
    text = advise(m, PARAMS, {"first_loss": 2.0, "last_loss": 0.05, "min_loss": 0.05}, before)
    assert "dvc exp run -S stage1.lora_dropout=0.05" in text
    # loss no longer falling at the end (last far above the minimum): not this rule
    assert "lora_dropout" not in advise(m, PARAMS, {"first_loss": 2.0, "last_loss": 0.5, "min_loss": 0.05}, before)
    # no previous eval or no stage1 metrics: the rule cannot fire, and nothing crashes
    assert "lora_dropout" not in advise(m, PARAMS, None, before)
    assert "lora_dropout" not in advise(m, PARAMS, {"first_loss": 2.0, "last_loss": 0.05}, None)


def test_quantization_drop_suggests_bigger_types():
    m = good_metrics()
    m["compare"]["gguf"]["recall"] = 0.7
    text = advise(m, PARAMS)
    assert "dvc exp run -S quantize.type=Q5_K_M" in text and "dvc exp run -S quantize.type=Q8_0" in text
    params = copy.deepcopy(PARAMS)
    params["quantize"]["type"] = "Q5_K_M"
    text = advise(m, params)
    assert "quantize.type=Q8_0" in text and "quantize.type=Q5_K_M" not in text
    params["quantize"]["type"] = "Q8_0"
    assert "chat-template or tokenizer" in advise(m, params)


def test_high_false_positive_rate():
    m = good_metrics()
    m["dev_all"]["false_positive_rate"] = 0.2
    text = advise(m, PARAMS)
    assert "false positive rate 20.0%" in text and "stage2.positive_ratio=0.05" in text
    assert "names persons in articles that have none" in text


def test_low_parse_rate_and_truncation():
    m = good_metrics()
    m["dev_all"].update(schema_valid_rate=0.3, json_parse_rate=0.4, truncated=12, false_positive_rate=0.6)
    text = advise(m, PARAMS)
    assert "only 30.0% of dev_all answers are valid" in text
    assert "12 answers hit eval.max_new_tokens=256" in text
    assert "dvc exp run -S eval.grammar=true" in text
    assert "invalid answers" in text                 # the false positives come from invalid answers


def test_missing_compare_section_is_fine():
    m = good_metrics()
    del m["compare"]
    assert "All checks pass" in advise(m, PARAMS)


def test_num_formats_like_params():
    assert [num(0.25), num(5e-05), num(0.1 + 0.05), num(1e-3)] == ["0.25", "5e-05", "0.15", "0.001"]


def scored_eval(answer_of, n_pos=60, n_empty=180, compare=20):
    """eval's metrics from real scoring of a model whose answer to each article is answer_of(gold)."""
    from jinmei.eval.evaluation import headline
    from jinmei.eval.scoring import score

    fields = ["name", "act", "address", "signature"]
    person = {"name": "山田太郎", "act": "逮捕", "address": "横浜市", "signature": None}
    gold_pos, gold_empty = {"persons": [person]}, {"persons": []}
    metrics = {}
    for split, golds in (("dev_all", [gold_pos] * (n_pos // 3) + [gold_empty] * n_empty),
                         ("dev_positive", [gold_pos] * n_pos)):
        records = [{"gold": g, "text": answer_of(g), "truncated": False} for g in golds]
        metrics[split] = score(records, fields)[1]
    cmp_ = score([{"gold": gold_pos, "text": answer_of(gold_pos), "truncated": False}] * compare, fields)[1]
    part = {"recall": cmp_["recall"], "recall_ci95": cmp_["ci95"]["recall"], "person_f1": cmp_["person_f1"]}
    metrics["compare"] = {"n": compare, "stage1": dict(part), "merged": dict(part), "gguf": dict(part)}
    metrics["throughput"] = {"articles_per_s": 1.0, "prompt_tokens_per_s": 1.0, "generated_tokens_per_s": 1.0}
    return metrics, headline(metrics)


def test_an_always_empty_model_is_flagged_not_called_healthy():
    """The real-corpus run: every recall 0, FP 0%, parse 100% - it used to say "Nothing to change"."""
    metrics, head = scored_eval(lambda gold: '{"persons":[]}')
    assert head["false_positive_rate"] == 0.0 and head["parse_rate"] == 1.0 and head["recall"] == 0.0
    assert metrics["dev_positive"]["ci95"]["recall"] == [0.0, 0.0602]   # 0/60, Wilson
    text = advise(metrics, PARAMS, {"first_loss": 2.0, "last_loss": 0.1})
    assert "Nothing to change" not in text and "not useful yet" in text
    assert "answers {\"persons\":[]} to 100.0%" in text
    assert "stage1 did not learn the task" in text and f"stage1.epochs={num(COMMITTED['stage1']['epochs'] * 2)}" in text and "stage1.size=null" in text
    from jinmei.eval.advice import low_levels
    from jinmei.config.params import parse

    assert set(low_levels(metrics, parse(deep_merge(COMMITTED, PARAMS)))) == {"recall", "person_f1",
                                                                                   "answered_empty_rate"}


def test_stage2_collapse_blames_stage2():
    m = good_metrics()
    m["dev_positive"] = {"recall": 0.1, "person_f1": 0.1, "answered_empty_rate": 0.9, "n": 2000}
    m["compare"] = {"n": 200, "stage1": {"recall": 0.9, "recall_ci95": [0.85, 0.93]},
                    "merged": {"recall": 0.1, "recall_ci95": [0.07, 0.15]}, "gguf": {"recall": 0.1}}
    text = advise(m, PARAMS)
    assert "stage2 drifted" in text and text.index("stage2.epochs=0.25") < text.index("stage2.lr=5e-05")
    m["compare"]["merged"]["recall_ci95"] = [0.3, 0.88]     # overlapping: the likely cause, not a measured one
    m["compare"]["merged"]["recall"] = 0.45
    text = advise(m, PARAMS)
    assert "stage2 is the likely cause" in text and "eval.compare_subset=800" in text
    assert text.count("intervals overlap") == 1


def test_a_drop_inside_the_intervals_is_not_called_a_drop():
    m = good_metrics()   # 20 articles: 0.8 -> 0.7 is 2 articles, within the intervals
    m["compare"] = {"n": 20, "stage1": {"recall": 0.8, "recall_ci95": [0.58, 0.92]},
                    "merged": {"recall": 0.7, "recall_ci95": [0.48, 0.85]}, "gguf": {"recall": 0.7,
                                                                                      "recall_ci95": [0.48, 0.85]}}
    text = advise(m, PARAMS)
    assert "not a measured drop" in text and "eval.compare_subset=80" in text
    assert "**stage2 lost recall**" not in text


def test_more_positives_says_the_mix_shrinks_when_stage2_takes_all():
    params = copy.deepcopy(PARAMS)
    m = good_metrics()
    m["compare"]["merged"]["recall"] = m["compare"]["gguf"]["recall"] = 0.5
    assert "the mix shrinks" not in advise(m, params)
    params["stage2"]["size"] = None
    assert "stage2.positive_ratio=0.15` (stage2.size is null: the mix shrinks" in advise(m, params)


def test_the_paired_test_decides_a_drop_and_a_whole_dev_positive_asks_for_a_larger_one():
    m = good_metrics()    # 83% -> 75% on all 200 Dev-Positive articles: intervals overlap
    m["dev_positive"]["n"] = 200
    m["compare"] = {"n": 200, "stage1": {"recall": 0.83, "recall_ci95": [0.772, 0.876]},
                    "merged": {"recall": 0.75, "recall_ci95": [0.686, 0.805]}, "gguf": {"recall": 0.75},
                    "paired": {"stage1_merged": {"lost": 22, "gained": 6, "p": 0.0037},
                               "merged_gguf": {"lost": 0, "gained": 0, "p": 1.0}}}
    text = advise(m, PARAMS)           # the intervals overlap, the paired test says the drop is real
    assert "**stage2 lost recall**" in text and "not a measured drop" not in text
    m["compare"]["paired"]["stage1_merged"] = {"lost": 20, "gained": 12, "p": 0.2153}
    text = advise(m, PARAMS)
    assert "20 article(s) found only before, 12 only after, McNemar exact p = 0.22" in text
    assert "-S split.dev_positive_size=800 -S eval.compare_subset=800" in text   # not compare_subset=800 alone
    m["dev_positive"]["n"] = 500
    assert "compare all of Dev-Positive: `dvc exp run -S eval.compare_subset=500`" in advise(m, PARAMS)


def names(seen, unseen, low, high):
    """dev_positive's seen/unseen groups and gap as eval writes them (recall = matched / gold)."""
    groups = {group: {"persons_gold": gold, "persons_matched": hit, "person_recall": hit / gold}
              for group, (hit, gold) in (("seen", seen), ("unseen", unseen))}
    gap = {"seen_minus_unseen": seen[0] / seen[1] - unseen[0] / unseen[1], "ci95": [low, high]}
    return {"names": groups, "names_recall_gap": gap}


def test_a_measured_gap_between_seen_and_unseen_names_is_reported():
    m = good_metrics()
    m["dev_positive"].update(names(seen=(95, 100), unseen=(150, 200), low=0.12, high=0.27))
    text = advise(m, PARAMS)
    assert "names seen in training are found more often than new ones" in text
    assert "95.0% of 100 seen names vs 75.0% of 200 unseen" in text and "12.0%-27.0%" in text
    assert "All checks pass" not in text


def test_a_gap_whose_interval_reaches_the_margin_is_quiet():
    m = good_metrics()
    m["dev_positive"].update(names(seen=(461, 471), unseen=(2043, 2108), low=-0.009, high=0.0223))
    assert "All checks pass" in advise(m, PARAMS)
    m["dev_positive"].update(names(seen=(9, 10), unseen=(5, 10), low=0.04, high=0.7))   # lower bound 4% < 5%
    assert "All checks pass" in advise(m, PARAMS)
    m["dev_positive"]["names_recall_gap"] = {"seen_minus_unseen": None, "ci95": None}     # a group was empty
    assert "All checks pass" in advise(m, PARAMS)
