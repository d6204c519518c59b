"""Tables the CLI prints: readable at 80 columns on a terminal, plain lines in a pipe.

On a terminal a table is a Rich table as wide as the terminal. Columns marked ``key`` (ids,
addresses, timestamps: the values people copy into the next command) are never wrapped or cut;
the other columns wrap. When the terminal is too narrow for the key columns and the narrowest
form of the rest, the columns marked droppable go first (highest ``drop`` first); when that is
not enough, each row prints as a block of ``name: value`` lines.

When stdout is not a terminal (a pipe, a file, a test) the table prints as plain lines: a
header, then one line per row with the columns aligned, never wrapped and without colour, so
that `grep`, `awk` and `less` see whole rows. Commands that scripts read also offer `--json`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class Column:
    """One column of a CLI table.

    Attributes:
        name: The header.
        key: An id, address or timestamp: never wrapped, never cut.
        drop: 0 keeps the column at any width; columns with a higher number are dropped first
            when the terminal is too narrow.
        justify: Alignment of the cells.
    """

    name: str
    key: bool = False
    drop: int = 0
    justify: Literal["left", "right"] = "left"


_UNLIMITED = 1_000_000

Cell = str | Text
"""A cell: plain text (never read as Rich markup) or a styled `Text`."""


def print_table(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[Cell]], *, title: str | None = None) -> None:
    """Print ``rows`` under ``columns``: a fitted Rich table on a terminal, plain lines elsewhere."""
    if not console.is_terminal:
        for line in plain_lines(columns, rows, title=title):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    shown = list(range(len(columns)))
    while True:
        table = _table([columns[i] for i in shown], [[row[i] for i in shown] for row in rows])
        # Measured without the terminal's limit: Rich clamps a measurement to the width it is given.
        if Measurement.get(console, console.options.update_width(_UNLIMITED), table).minimum <= console.width:
            if title:  # a line of its own: a table's title would wrap to the table's width
                console.print(Text(title, style="italic"))
            console.print(table)
            return
        droppable = [i for i in shown if columns[i].drop > 0]
        if not droppable:
            break
        shown.remove(max(droppable, key=lambda i: (columns[i].drop, i)))
    _records(console, columns, rows, title)


def plain_lines(columns: Sequence[Column], rows: Sequence[Sequence[Cell]], *, title: str | None = None) -> list[str]:
    """The table as plain text lines: a header and one aligned line per row, nothing wrapped."""
    cells = [[column.name for column in columns]] + [[_flat(cell) for cell in row] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    out = [title] if title else []
    for line in cells:
        parts = [
            value.rjust(widths[i]) if columns[i].justify == "right" else value.ljust(widths[i]) for i, value in enumerate(line)
        ]
        out.append("  ".join(parts).rstrip())
    return out


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 account``, ``2 accounts``, ``0 accounts`` (``plural_form`` for irregular words)."""
    return f"{count} {singular if count == 1 else (plural_form or singular + 's')}"


def _flat(cell: Cell) -> str:
    text = cell.plain if isinstance(cell, Text) else str(cell)
    return " ".join(text.split("\n")).strip()


def _table(columns: Sequence[Column], rows: Sequence[Sequence[Cell]]) -> Table:
    table = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold")
    for index, column in enumerate(columns):
        longest = max((len(_flat(row[index])) for row in rows), default=0)
        if column.key:
            # A fixed width as wide as the longest value: Rich never wraps or cuts it.
            table.add_column(column.name, no_wrap=True, min_width=max(longest, len(column.name)), justify=column.justify)
        else:
            table.add_column(column.name, overflow="fold", justify=column.justify)
    for row in rows:
        table.add_row(*(cell if isinstance(cell, Text) else Text(str(cell)) for cell in row))
    return table


def _records(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[Cell]], title: str | None) -> None:
    """Each row as a block of ``name  value`` lines: the layout that fits any width."""
    if title:
        console.print(Text(title, style="italic"))
    for number, row in enumerate(rows):
        if number:
            console.print()
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", justify="right", no_wrap=True)
        grid.add_column(overflow="fold")
        for column, cell in zip(columns, row, strict=True):
            grid.add_row(column.name, cell if isinstance(cell, Text) else Text(str(cell)))
        console.print(grid)
