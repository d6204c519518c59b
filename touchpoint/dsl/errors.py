"""Errors of the playbook contract.

::

    ValueError
    └── ContractError            a file (or files) broke the contract; carries every Problem
    Problem                      one finding: file, line, field, message (not an exception)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong in a file, printed as ``file:line: field: message``."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ContractError(ValueError):
    """One or more files broke the contract; ``problems`` lists all of them."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def hint(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean `x`?)`` for the candidate closest to ``word``, or nothing."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""
