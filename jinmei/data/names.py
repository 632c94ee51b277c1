"""Person names compared as eval compares them, and whether a name occurs in a set of articles.

Split (how many dev persons no training article names) and eval (recall on those apart) must agree on both."""
from __future__ import annotations

import unicodedata
from typing import Any, Callable, Iterable


def normalize(value: Any) -> str:
    """NFKC and no whitespace at all: 山田 太郎 == 山田　太郎 == 山田太郎; None == ''."""
    if value is None:
        return ""
    return "".join(unicodedata.normalize("NFKC", str(value)).split())


TRAINING_SPLITS = ("sanity", "train_positive", "train_empty")   # every article a training stage may draw: "seen"


def name_index(texts: Iterable[str]) -> Callable[[str], bool]:
    """Whether a name occurs in any of `texts` (training articles), compared as `normalize` compares names.

    A dev person whose name the training articles never hold can only be found by reading; one they hold may be
    remembered. Substring search on one joined string: a few seconds for a few thousand names over 100k articles."""
    joined = "\x00".join(normalize(t) for t in texts)
    memo: dict[str, bool] = {}

    def seen(name: Any) -> bool:
        key = normalize(name)
        if key not in memo:
            memo[key] = bool(key) and key in joined
        return memo[key]
    return seen
