"""The repository speaks only of itself: no file tells how its developers got their machines or GPU time.

Every text file git knows (tracked, or new and not ignored) is read. A results file may say on which machine and with
which command a figure was measured, never what that machine cost its developers: device minutes, lending, upload
limits, "carrying" files to a machine, their sessions' outages, issue numbers of a tracker, absolute paths of their
own checkouts. An offline GPU host is a user's setting and is described as one (docs/offline.md).
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "device time budgets": r"device[- ]?(?:minute|second|time)s?\b",
    "lent machines": r"\b(?:not )?lent\b|\blending\b",
    "uploading ('carry')": r"\bcarr(?:y|ied|ying)\b|gpucarry",
    "upload limits": r"\b64 MiB\b|\bper call\b",
    "the developers' side": r"\bthis side\b|\boutages?\b|idle past its",
    "the developers' paths": r"(?<![\w.])/work/|/tmp/bash|/root/out\b",
    "tracker issue numbers": r"\bissues? #?\d+|(?<![\w&/#])#\d+\b",
}
PATTERN = re.compile("|".join(f"(?P<g{i}>{p})" for i, p in enumerate(FORBIDDEN.values())), re.IGNORECASE)
# the words in another sense: a line holding one of these phrases may use them (checked by hand)
ALLOWED = (
    "template carried over",
    "the Modelfile cannot carry",          # a system prompt Ollama's Modelfile syntax cannot express
    "turns carry none",
    "special tokens carry",                # token ids
    "articles per call",                   # per generate call
    "article #",                           # the position an old error message printed, quoted
    '"#0" not in', '"#1" not in',          # tests that no message prints such a position
)
SELF = "tests/test_repo_text.py"               # names every phrase on purpose


def text_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return [f for f in out.splitlines() if f and (ROOT / f).is_file()]


def offending_lines(text: str) -> list[tuple[int, str, str]]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in PATTERN.finditer(line):
            if any(phrase in line for phrase in ALLOWED):
                continue
            what = list(FORBIDDEN)[int(match.lastgroup[1:])]
            found.append((number, what, line.strip()[:160]))
    return found


def test_no_file_speaks_of_the_developers_machines():
    problems = []
    for name in text_files():
        if name == SELF:
            continue
        data = (ROOT / name).read_bytes()
        if b"\0" in data[:8192]:
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        problems += [f"{name}:{n}: {what}: {line}" for n, what, line in offending_lines(text)]
    assert not problems, "phrase it as a fact of the run or of the user's setting:\n" + "\n".join(problems)


def test_the_patterns_catch_what_they_should():
    bad = ["30 device-minutes", "one lent H200", "carry [.gpuwheels]", "the carried pieces", "a 64 MiB limit",
           "three files per call", "a late call on this side", "an outage", "/work/main/x", "/tmp/bash_jobs/1",
           "(issue 18)", "see #12", ".gpucarry/stage1"]
    fine = ["per_device_batch", "the special tokens carry Qwen's ids", "a dataset's columns", "issued",
            "SDPA converts the mask at every call", "`#` comments", "{% raw %}#{% endraw %}", "x&#12;"]
    assert all(offending_lines(line) for line in bad), [line for line in bad if not offending_lines(line)]
    assert not any(offending_lines(line) for line in fine), [line for line in fine if offending_lines(line)]
