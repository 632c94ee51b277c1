"""Loss only on the answer: checked on a real collated batch, with the real tokenizer."""
import pytest

from jinmei.template.prompt import answer_text
from jinmei.train.examples import IGNORE, encode_example, encode_rows

ROWS = [
    {"id": "p1", "text": "東京都新宿区の会社員、山田太郎容疑者（45）が逮捕された。",
     "output": {"persons": [{"name": "山田太郎", "act": "逮捕", "address": "東京都新宿区", "signature": None}]}},
    {"id": "e1", "text": "明日の関東地方は晴れ、最高気温は２０度の見込み。", "output": {"persons": []}},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_base)


def test_prompt_masked_answer_and_end_of_turn_trained(tokenizer, params):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    fields = params["schema"]["fields"]
    system = params["prompt"]["system"]
    examples, report = encode_rows(ROWS, tokenizer, system, fields, 1024, "skip")
    assert report.examples == 2 and report.skipped == 0
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)
    batch = collator(examples)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for i, row in enumerate(ROWS):
        ids = batch["input_ids"][i].tolist()
        labels = batch["labels"][i].tolist()
        mask = batch["attention_mask"][i].tolist()
        n = sum(mask)
        prompt = tokenizer.apply_chat_template(
            [{"role": "system", "content": system}, {"role": "user", "content": row["text"]}],
            add_generation_prompt=True, tokenize=False)
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        assert all(x == IGNORE for x in labels[:n_prompt]), "a prompt token is trained"
        answer = labels[n_prompt:n]
        assert all(x != IGNORE for x in answer), "an answer token is masked"
        assert all(x == IGNORE for x in labels[n:]), "padding is trained"
        decoded = tokenizer.decode(answer)
        assert decoded.startswith(answer_text(row["output"], fields))
        assert im_end in answer, "the end-of-turn token must be trained, or the model never stops"
        assert ids[:n_prompt] == tokenizer(prompt, add_special_tokens=False)["input_ids"]


def test_too_long_article_is_cut_or_skipped_never_the_answer(tokenizer, params):
    fields = params["schema"]["fields"]
    system = params["prompt"]["system"]
    long_row = dict(ROWS[0], id="long", text=ROWS[0]["text"] + "関連して" * 400)
    full, _ = encode_example(tokenizer, system, long_row["text"], answer_text(long_row["output"], fields))
    limit = len(full) // 2
    _, skipped = encode_rows([long_row], tokenizer, system, fields, 4096, "skip")
    assert skipped.skipped == 0
    with pytest.raises(Exception, match="no training example fits"):
        encode_rows([long_row], tokenizer, system, fields, limit, "skip")
    examples, report = encode_rows([long_row, ROWS[1]], tokenizer, system, fields, limit, "cut_article")
    assert report.cut == 1 and report.skipped == 0
    cut = examples[0]
    assert len(cut["input_ids"]) <= limit
    answer_ids = [x for x in cut["labels"] if x != IGNORE]
    assert tokenizer.decode(answer_ids).startswith(answer_text(long_row["output"], fields))


def test_forked_encoders_give_the_in_process_examples(tokenizer, params):
    """Large mixtures are encoded in worker processes: same examples, same order, same report."""
    fields, system = params["schema"]["fields"], params["prompt"]["system"]
    long_row = dict(ROWS[0], id="long", text=ROWS[0]["text"] + "関連して" * 60)
    rows = [dict(r, id=f"{r['id']}-{i}") for i in range(300) for r in (ROWS[0], ROWS[1], long_row)]
    limit = len(encode_example(tokenizer, system, long_row["text"], answer_text(long_row["output"], fields))[0]) - 1
    one = encode_rows(rows, tokenizer, system, fields, limit, "skip", workers=1)
    forked = encode_rows(rows, tokenizer, system, fields, limit, "skip", workers=2)
    assert forked[0] == one[0] and forked[1] == one[1] and one[1].skipped == 300


def test_length_grouping_sees_the_prompt_not_the_answer(tiny_base, params, tmp_path, monkeypatch):
    """The same article as a positive and as an empty gets one grouping length: batches are never sorted by
    class (an answer-inclusive length put positives and empties in separate batches, and stage1 learned
    "always positive")."""
    import copy
    import dataclasses

    from transformers import trainer_pt_utils

    from jinmei.train import trainer as train_mod
    seen = {}
    real_init = trainer_pt_utils.LengthGroupedSampler.__init__

    def spy(self, batch_size, dataset=None, lengths=None, **kw):
        seen["lengths"] = lengths
        real_init(self, batch_size, dataset=dataset, lengths=lengths, **kw)

    monkeypatch.setattr(trainer_pt_utils.LengthGroupedSampler, "__init__", spy)
    positive = ROWS[0]
    empty = {"id": "e2", "text": positive["text"], "output": {"persons": []}}
    p = copy.deepcopy(params)
    p["train"].update(group_by_length=True, global_batch=2, per_device_batch=2)
    from jinmei.config.params import parse

    parsed = parse(p)
    section = dataclasses.replace(parsed.sanity, lr=1e-3, steps=1, global_batch=None)
    train_mod.train(train_mod.TrainRun("t", parsed, section, [positive, empty, ROWS[1]], tiny_base), tmp_path / "adapter")
    lengths = list(seen["lengths"])
    assert lengths[0] == lengths[1] != lengths[2], lengths
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
