"""formatting.table lays out a printable-ASCII table itself, exactly as
tabulate's ``plain`` format would, and hands anything else to tabulate."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st
from tabulate import tabulate

from acode_sync.cli.formatting import table

ASCII = st.text(
    alphabet=string.ascii_letters + string.digits + string.punctuation + " ", max_size=14
)


def plain(headers: list[str], rows: list[list[str]]) -> str:
    return tabulate(rows, headers=headers, tablefmt="plain", disable_numparse=True)


@given(
    st.integers(min_value=1, max_value=5).flatmap(
        lambda n: st.tuples(
            st.lists(ASCII, min_size=n, max_size=n),
            st.lists(st.lists(ASCII, min_size=n, max_size=n), max_size=6),
        )
    )
)
def test_an_ascii_table_is_laid_out_as_tabulate_does(
    table_data: tuple[list[str], list[list[str]]],
) -> None:
    headers, rows = table_data
    assert table(headers, rows) == plain(headers, rows)


def test_the_queue_shape_and_numbers_as_text() -> None:
    headers = ["Item", "Status", "Retries", "Last Error"]
    rows = [
        ["01M8VEZWX72807MXN5S75HNJ9S (chat)", "Waiting (retry in 40s)", "2", "-"],
        ["e-1 (msg)", "Failed", "10", "ACODE-SYNC-005: item too large  "],
        ["  x", "Pending", "0", ""],
    ]
    assert table(headers, rows) == plain(headers, rows)


def test_wide_escaped_and_multiline_cells_go_to_tabulate() -> None:
    for rows in (
        [["日本語のチャット", "1"], ["emoji 🎉", "2"]],
        [["tab\there", "1"]],
        [["two\nlines", "1"]],
        [["bad \udcff byte", "1"]],  # printable() escapes it: \\xFF
    ):
        cells = [[cell.replace("\udcff", "\\xFF") for cell in row] for row in rows]
        assert table(["Title", "N"], rows) == plain(["Title", "N"], cells)
