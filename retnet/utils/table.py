"""Aligned text tables for command output: one formatter, so every command's columns line up the same way."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, align: str | None = None) -> str:
    """The rows as a plain-text table: a header line, a rule, then one line per row, columns two spaces apart.

    Column widths follow the widest cell (header included); the last column is not padded, so lines carry no
    trailing spaces.

    Args:
        headers: the column names.
        rows: the cells, one sequence per row, each of ``len(headers)`` values (formatted with ``str``).
        align: one letter per column, ``"l"`` (left) or ``"r"`` (right, for numbers); default all left.

    Returns:
        The table, lines joined by newlines, without a final newline.

    Raises:
        ValueError: a row or ``align`` whose length differs from ``headers``, or an ``align`` letter other than
            ``l`` / ``r``.
    """
    n = len(headers)
    align = align if align is not None else "l" * n
    if len(align) != n or set(align) - {"l", "r"}:
        raise ValueError(f"align must be {n} letters, each 'l' or 'r', got {align!r}")
    cells = [[str(h) for h in headers]]
    for i, row in enumerate(rows):
        if len(row) != n:
            raise ValueError(f"row {i} has {len(row)} cells, expected {n} (one per header)")
        cells.append([str(c) for c in row])
    widths = [max(len(line[j]) for line in cells) for j in range(n)]

    def line(values: list[str]) -> str:
        padded = [v.rjust(w) if a == "r" else v.ljust(w) for v, w, a in zip(values, widths, align)]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(c) for c in cells[1:])])
