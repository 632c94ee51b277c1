"""Bring your own instruct model: every supported chat-template family, end to end.

Each family is a tiny random model with its real tokenizer and real chat template (tests/families.py). For each:
the masked part of a training example is exactly the prompt (shown nanochat-style), llama.cpp's prompt ids equal
training's (BOS and end-of-turn included, and for an article holding the family's own control strings), the
Modelfile's TEMPLATE rendered by Go's text/template equals the HF render, and (slow) the real `dvc repro` runs
from `base` to `eval` on the tiny pipeline.
"""
from __future__ import annotations

import json
import shutil

import pytest

import families
import tiny_repo
from test_chat_markers import expected_prompt_ids, marker_articles
from jinmei.template import chat
from jinmei.train.examples import IGNORE, encode_example

SYSTEM = "Extract persons from this Japanese news article as JSON."
ARTICLE = "横浜市中区の会社員、山田太郎容疑者（45）を逮捕した。\n二段落目の文。"
ANSWER = '{"persons":[{"name":"山田太郎","act":"逮捕","address":"横浜市中区","signature":null}]}'
# Each a whole tiny `dvc repro` (2-4 minutes on 2 cores), one per kind of model the stages must handle apart: Llama 3
# (128k byte-level BPE), Qwen 3 (thinking off), Phi-3 (SentencePiece, fused qkv/gate_up projections), Gemma 4 (its own
# architecture, 262k vocabulary). ChatML runs whole in every tiny repo and in the demo (SmolLM2); Mistral has Llama's
# module names. Their templates, ids and GGUF conversion are tested per family above and below.
PIPELINE = ("llama3", "qwen3", "phi3", "gemma")


@pytest.fixture(scope="module", params=families.FAMILIES)
def family(request, tmp_path_factory):
    """(name, HF folder as the base stage writes it, tokenizer)."""
    from transformers import AutoTokenizer

    from jinmei.model import basemodel
    built = families.build_family_model(request.param, tmp_path_factory.mktemp(request.param) / "hf")
    out = built.parent / "base"
    basemodel.materialise(str(built), out, save_dtype="float32")
    return request.param, out, AutoTokenizer.from_pretrained(out)


def shown(tokenizer, ids, labels) -> str:
    return "".join(f"<{tokenizer.decode([i])}>" if lab != IGNORE else f"[{tokenizer.decode([i])}]"
                   for i, lab in zip(ids, labels))


def test_masked_part_is_exactly_the_prompt(family):
    name, _, tokenizer = family
    fmt = chat.chat_format(tokenizer)
    ids, labels = encode_example(tokenizer, SYSTEM, ARTICLE, ANSWER)
    n = labels.count(IGNORE)
    print(f"\n{name} ({fmt.name}): {shown(tokenizer, ids, labels)}")
    assert labels[:n] == [IGNORE] * n and all(lab != IGNORE for lab in labels[n:])
    assert ids[:n] == chat.prompt_ids(tokenizer, fmt, SYSTEM, ARTICLE)
    end_text, end_id = chat.end_of_turn(tokenizer, fmt)
    assert ids[-1] == end_id and tokenizer.decode(ids[n:-1]) == ANSWER
    assert end_text == families.FAMILY_SPECS[name].end_of_turn
    plain = tokenizer(chat.prompt_text(fmt, SYSTEM, ARTICLE), add_special_tokens=False)["input_ids"]
    assert ids[:n] == plain, "a plain article: the ids of plain tokenization of the render"
    bos = tokenizer.bos_token_id
    assert ids[:2].count(bos) <= 1 if bos is not None else True, "no double BOS"


def test_the_template_is_checked_and_refused_or_served(family):
    name, _, tokenizer = family
    found = chat.check_template(tokenizer, SYSTEM)
    assert found["end_of_turn"] == families.FAMILY_SPECS[name].end_of_turn


def injected_article(tokenizer) -> str:
    specials = chat.special_tokens(tokenizer)[:6]
    return ARTICLE + "".join(specials) + '{"persons":[]}' + ARTICLE


def test_llama_cpp_feeds_training_ids_and_the_modelfile_renders_the_same(family, tmp_path):
    """Convert + Q8_0, then: GGUF add_bos, end-of-turn is EOG, llama.cpp's prompt ids == training's for a plain
    and an injected article; the Modelfile TEMPLATE (Go text/template) == the HF render."""
    import llama_cpp

    from jinmei.export import gguf as export
    from jinmei.infer.engine import GgufChat
    from jinmei.template.ollama import go_render

    name, base, tokenizer = family
    report = export.export(base, tmp_path / "gguf", "Q8_0", "t", SYSTEM)
    fmt = chat.chat_format(tokenizer)
    llm = llama_cpp.Llama(model_path=report["gguf"], vocab_only=True, verbose=False)
    served = GgufChat(llm)
    if fmt.bos_token and chat.prompt_text(fmt, SYSTEM, ARTICLE).startswith(fmt.bos_token):
        ids = served.prompt_ids(SYSTEM, ARTICLE)
        assert ids.count(served.bos_id) == 1 and ids[0] == served.bos_id, "one BOS, from the template or the GGUF"
    for article in (ARTICLE, injected_article(tokenizer), *marker_articles(tokenizer, fmt, SYSTEM, ARTICLE)):
        enc = chat.encode(tokenizer, fmt, SYSTEM, article, ANSWER)
        assert served.prompt_ids(SYSTEM, article) == enc.input_ids[:enc.n_prompt], (name, article)
    assert llama_cpp.llama_vocab_is_eog(llm._model.vocab, chat.end_of_turn(tokenizer, fmt)[1])
    modelfile = (tmp_path / "gguf" / "Modelfile").read_text(encoding="utf-8")
    template = modelfile.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    rendered = go_render(template, {"system": SYSTEM, "messages": [{"role": "user", "content": ARTICLE}]})
    want = chat.prompt_text(fmt, SYSTEM, ARTICLE)
    if served.add_bos and fmt.bos_token and want.startswith(fmt.bos_token):
        want = want[len(fmt.bos_token):]        # llama.cpp adds it (Gemma 4: forced), Ollama strips it first
    assert rendered == want
    for stop in fmt.family.stops:
        assert f'PARAMETER stop "{stop}"' in modelfile


@pytest.mark.slow
@pytest.mark.parametrize("name", PIPELINE)
def test_tiny_pipeline_runs_from_base_to_eval(name, tmp_path_factory):
    built = tiny_repo.session_repo(tmp_path_factory)
    repo = tiny_repo.clone(built.repo, tmp_path_factory.mktemp(f"family-{name}") / "repo")
    hf = families.build_family_model(name, repo.parent / "hf")
    params = {"base": {"model": str(hf)}}
    if families.FAMILY_SPECS[name].target_modules:     # Phi-3's fused qkv/gate_up: preflight refuses the recipe's list
        params["lora"] = {"target_modules": list(families.FAMILY_SPECS[name].target_modules)}
    tiny_repo.write_params(repo, params)
    output = tiny_repo.dvc(repo, "repro", timeout=1200)
    ran = tiny_repo.ran(output)
    assert ran[ran.index("base"):] == ["base", "sanity", "stage1", "stage2", "merge", "quantize", "eval"], output
    report = json.loads((repo / "metrics" / "details" / "quantize.json").read_text())
    assert report["tokenizer_parity"]["identical"] and report["tokenizer_parity"]["family"]
    metrics = json.loads((repo / "metrics" / "details" / "eval.json").read_text())
    assert metrics["dev_all"]["n"] > 0 and "false_positive_rate" in metrics["dev_all"]["ci95"]
    shutil.rmtree(repo / ".dvc" / "cache", ignore_errors=True)


def test_an_article_that_is_begins_or_ends_with_a_template_marker_stays_text(family):
    """For every family: an article `<|im_end|>`, `<|im_end|>\n<|im_start|>user`, `<|eot_id|>`+text
    ... gets the control tokens of an ordinary article at the same places and is itself tokenized as text
    (tests/template/test_chat_markers.py's oracle); llama.cpp's ids for these articles: the test above."""
    name, _, tokenizer = family
    fmt = chat.chat_format(tokenizer)
    articles = marker_articles(tokenizer, fmt, SYSTEM, ARTICLE)
    assert articles, name
    for article in articles:
        enc = chat.encode(tokenizer, fmt, SYSTEM, article, ANSWER)
        assert enc.input_ids[:enc.n_prompt] == expected_prompt_ids(tokenizer, fmt, article, SYSTEM, ARTICLE), \
            (name, article)
