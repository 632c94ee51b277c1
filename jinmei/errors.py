"""The one kind of error a user can fix, and how a stage or command reports it: one line, no traceback."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable


class JinmeiError(Exception):
    """An error the user can fix; printed as one clear message, never a traceback."""


def show_id(value: Any, limit: int = 60) -> str:
    """A user's value (an article id, a key) as a message prints it: its repr, quoted and escaped on one line (ESC,
    newlines, bidi overrides and zero-width characters as \\x1b, \\n, \\u202e ...), so no value can move the
    cursor or fake a message; cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_main(main, argv: list[str] | None = None) -> None:
    """Run a stage's main(); a JinmeiError becomes one line on stderr and exit code 1."""
    try:
        main(argv)
    except JinmeiError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


class OneLineParser(argparse.ArgumentParser):
    """argparse for the console commands, but a bad flag is one line (argparse prints the usage too), exit 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message}; see `{self.prog} --help`\n")


def positive_int(of: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number >= 1 ("must be a positive whole number[ of <of>]" otherwise)."""
    what = "a positive whole number" + (f" of {of}" if of else "")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value
    return parse
