"""Judging and showing text any SQLite client may have stored."""

from __future__ import annotations

import sqlite3

import pytest

from acode_sync import text


@pytest.mark.parametrize(
    ("raw", "problem", "shown"),
    [
        (b"plain \xe2\x9c\x93", None, "plain \u2713"),
        (b"A\xffB", "not valid UTF-8 (byte 0xFF at byte 1)", "A\\xFFB"),
        (b"\xe2\x9c\x93\xc3(", "not valid UTF-8 (byte 0xC3 at byte 3)", "\u2713\\xC3("),
        (b"x\xed\xa0\x80", "not valid UTF-8 (byte 0xED at byte 1)", "x\\xED\\xA0\\x80"),
        (b"a\x00b", "contains a NUL byte at byte 1 (PostgreSQL text cannot hold it)", "a\\0b"),
    ],
)
def test_bytes_as_sqlite_hands_them_over(raw: bytes, problem: str | None, shown: str) -> None:
    value = text.decode(raw)
    assert text.problem(value) == problem
    assert text.printable(value) == shown
    # Nothing is lost: the original bytes come back.
    assert value.encode("utf-8", "surrogateescape") == raw


def test_a_lone_surrogate_from_a_json_escape() -> None:
    assert text.problem("ok\ud800") == (
        "contains a lone surrogate U+D800 at byte 2 (not valid Unicode)"
    )
    assert text.printable("ok\ud800") == "ok\\uD800"


def test_a_connection_reads_bad_bytes_without_raising() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.execute("INSERT INTO t VALUES (CAST(X'41FF42' AS TEXT))")
    with pytest.raises(sqlite3.OperationalError, match="Could not decode"):
        conn.execute("SELECT v FROM t").fetchone()
    conn.text_factory = text.decode
    assert conn.execute("SELECT v FROM t").fetchone() == ("A\udcffB",)
