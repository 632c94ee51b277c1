"""The one kind of error a user can fix, and how a stage reports it: one line, exit 1, no traceback."""
from __future__ import annotations

import sys


class JinmeiError(Exception):
    """An error the user can fix; printed as one clear message, never a traceback."""


def run_main(main, argv: list[str] | None = None) -> None:
    """Run a stage's main(); a JinmeiError becomes one line on stderr and exit code 1."""
    try:
        main(argv)
    except JinmeiError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
