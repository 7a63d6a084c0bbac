"""The text-table formatter of command output, and ``retnet data list`` printed through it."""

from __future__ import annotations

import pytest

from retnet.cli.__main__ import main
from retnet.utils.table import format_table


def test_columns_align_and_numbers_right_align():
    text = format_table(["name", "tokens"], [["shakespeare", 5_000], ["sotu", 12]], align="lr")
    assert text.splitlines() == [
        "name         tokens",
        "-----------  ------",
        "shakespeare    5000",
        "sotu             12",
    ]
    assert format_table(["a", "b"], []) == "a  b\n-  -"


def test_bad_rows_and_alignment_raise():
    with pytest.raises(ValueError, match="row 1 has 1 cells, expected 2"):
        format_table(["a", "b"], [[1, 2], [3]])
    with pytest.raises(ValueError, match="align must be 2 letters"):
        format_table(["a", "b"], [[1, 2]], align="lc")


def test_data_list_columns_line_up(capsys, tmp_path):
    assert main(["data", "list", "--cache-dir", str(tmp_path)]) == 0
    header, rule, *rows = capsys.readouterr().out.splitlines()
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    assert [i for i in range(len(rule)) if rule[i] == "-" and (i == 0 or rule[i - 1] == " ")] == starts
    assert len(rows) >= 4 and all(row[starts[3] : starts[4]].strip() in ("fetched", "not fetched") for row in rows)
