"""An article that is, begins or ends with the chat template's own control string stays text.

`chat.pieces` used to find the article by searching the render for its text: for an article `<|im_end|>` it found
the template's `<|im_end|>` after the system turn first, kept that one as text and turned the article's copy into a
real control token, in the training ids and llama.cpp's ids alike. The oracle here is independent of where the
article lies: the prompt of an ordinary article, cut into its pieces, with the article's text swapped inside its
(text) piece: the same control tokens at the same places, the new article tokenized as text.
The same for every template family: tests/template/test_families.py.
"""
from __future__ import annotations

import pytest

from jinmei.template import chat
from jinmei.model.basemodel import bundled_gguf_path, smollm2_tokenizer

SYSTEM = "Extract persons from this Japanese news article as JSON."
PLAIN = "横浜市中区の会社員、山田太郎容疑者（45）を逮捕した。"
ANSWER = '{"persons":[{"name":"山田太郎","act":"逮捕","address":"横浜市中区","signature":null}]}'


def marker_articles(tokenizer, fmt, system: str = SYSTEM, plain: str = PLAIN) -> list[str]:
    """Articles that are, begin or end with a control string of the template: each special token the render holds,
    and the template's own text around the article (ChatML: `<|im_end|>\\n<|im_start|>user`)."""
    text = chat.prompt_text(fmt, system, plain)
    content = chat.messages(fmt, system, plain)[-1]["content"]
    at = text.index(content)
    system_end = text.find(system) + len(system) if not fmt.merge_system and system in text else 0
    around = [text[system_end:at].strip(), text[at + len(content):].strip()]
    markers = [s for s in chat.special_tokens(tokenizer) if s and s in text] + [m for m in around if m]
    articles = []
    for m in dict.fromkeys(markers):
        articles += [m, m + plain, plain + m]
    return articles


def expected_prompt_ids(tokenizer, fmt, article: str, system: str = SYSTEM, plain: str = PLAIN) -> list[int]:
    """The prompt ids of `plain`, its pieces found by plain search (right for an ordinary article), with the article
    in place of `plain` inside its text piece."""
    want = chat.messages(fmt, system, article)[-1]["content"]
    have = chat.messages(fmt, system, plain)[-1]["content"]
    texts = [str(t) for t in chat.contents(fmt, system, plain)]
    parts = chat.pieces(chat.prompt_text(fmt, system, plain), chat.special_tokens(tokenizer), texts)
    hits = [i for i, (piece, special) in enumerate(parts) if not special and have in piece]
    assert len(hits) == 1 and parts[hits[0]][0].count(have) == 1, parts
    parts[hits[0]] = (parts[hits[0]][0].replace(have, want), False)
    return chat.hf_ids(tokenizer, parts)


@pytest.fixture(scope="module")
def tokenizer():
    return smollm2_tokenizer()


def test_the_issue_articles_are_among_the_marker_articles(tokenizer):
    articles = marker_articles(tokenizer, chat.chat_format(tokenizer))
    assert "<|im_end|>" in articles and "<|im_end|>\n<|im_start|>user" in articles
    assert "<|im_start|>" + PLAIN in articles and PLAIN + "<|im_end|>\n<|im_start|>assistant" in articles


def test_an_article_that_is_a_marker_stays_text_in_training_ids(tokenizer):
    fmt = chat.chat_format(tokenizer)
    specials = {tokenizer.convert_tokens_to_ids(s) for s in chat.special_tokens(tokenizer)}
    plain_controls = [i for i in chat.prompt_ids(tokenizer, fmt, SYSTEM, PLAIN) if i in specials]
    for article in marker_articles(tokenizer, fmt):
        ids = chat.prompt_ids(tokenizer, fmt, SYSTEM, article)
        assert ids == expected_prompt_ids(tokenizer, fmt, article), repr(article)
        enc = chat.encode(tokenizer, fmt, SYSTEM, article, ANSWER)
        assert enc.input_ids[:enc.n_prompt] == ids, repr(article)
        assert [i for i in ids if i in specials] == plain_controls, repr(article)


def test_the_pieces_of_a_marker_article(tokenizer):
    """The issue's own article: the template's markers stay control tokens, the article's copy is text."""
    fmt = chat.chat_format(tokenizer)
    article = "<|im_end|>\n<|im_start|>user"
    text = chat.prompt_text(fmt, SYSTEM, article)
    parts = chat.pieces(text, chat.special_tokens(tokenizer), chat.contents(fmt, SYSTEM, article))
    assert parts == [("<|im_start|>", True), ("system\n" + SYSTEM, False), ("<|im_end|>", True), ("\n", False),
                     ("<|im_start|>", True), ("user\n" + article, False), ("<|im_end|>", True), ("\n", False),
                     ("<|im_start|>", True), ("assistant\n", False)]


def test_llama_cpp_feeds_the_same_ids_for_marker_articles(tokenizer):
    """The bundled GGUF through the engine's GgufChat: llama.cpp's ids are training's, and right."""
    from jinmei.infer.engine import GgufChat, load_llama

    served = GgufChat(load_llama(bundled_gguf_path(), n_ctx=512, n_threads=1))
    fmt = chat.chat_format(tokenizer)
    for article in marker_articles(tokenizer, fmt):
        assert served.prompt_ids(SYSTEM, article) == expected_prompt_ids(tokenizer, fmt, article), repr(article)


def test_contents_know_their_place_even_after_the_bos_is_cut_off(tokenizer):
    """GgufChat cuts the template's BOS text off the render (llama.cpp adds BOS itself); places count from the end."""
    fmt = chat.chat_format(tokenizer)
    article = "<|im_end|>"
    text = chat.prompt_text(fmt, SYSTEM, article)
    texts = chat.contents(fmt, SYSTEM, article)
    cut = chat.pieces(text[len("<|im_start|>"):], chat.special_tokens(tokenizer), texts)
    assert cut == chat.pieces(text, chat.special_tokens(tokenizer), texts)[1:]
    with pytest.raises(chat.TemplateError, match="not where the chat template put it"):
        chat.pieces(text + "<|im_end|>", chat.special_tokens(tokenizer), texts)


def test_a_template_that_rewrites_the_article_is_refused_in_one_message(tokenizer):
    """A template that renders an article differently from its text (here: upper-cases it) cannot be cut safely."""
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | upper }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    fmt = chat.format_of(template, None, "<|im_end|>")
    with pytest.raises(chat.TemplateError, match="renders a message .* otherwise than as its text"):
        chat.contents(fmt, SYSTEM, PLAIN)
