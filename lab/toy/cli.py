"""What the toy scripts (scripts/toy_studies.py, compare_guidance.py, evaluate_toy.py) share on the command line and
in their tables: argument types that refuse nonsense with one argparse error line, and the number format of a table
cell."""

from __future__ import annotations

import argparse
from typing import Any, Callable


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``; anything else stops the script with argparse's one
    error line, which names the option and the value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least {minimum}")
        return value
    return parse


def fmt(x: Any, digits: int = 3) -> str:
    """A table cell: a float to ``digits`` places, NaN (not measured, e.g. a reused run's seconds) as ``-``."""
    if isinstance(x, float):
        return "-" if x != x else f"{x:.{digits}f}"
    return str(x)
