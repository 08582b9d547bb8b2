"""Subscriber lists: every row comes out as a subscriber or a reported skip, in file order."""

from __future__ import annotations

import email
import email.policy
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import email_validator
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.errors import SubscribersError
from newsletter.lists.addresses import fast_normalise, validate_address
from newsletter.lists.subscribers import (
    Skipped,
    SkipReason,
    Subscriber,
    read_subscribers,
)
from newsletter.lists.suppression_csv import append_suppressions
from tests.commands import assert_clean_exit, bare_workspace, cli, files_under, said
from tests.sending import readers
from tests.workspace import SAMPLE

DATA = Path(__file__).parent / "data" / "subscribers"
EXAMPLE = Path(__file__).parents[1] / "subscribers.example.csv"
SAVE_AS_UTF8 = 'Save it as UTF-8 CSV (in Excel: Save As, "CSV UTF-8") and try again.'
SPECIAL_USE = (
    "The part after the @-sign is a special-use or reserved name that cannot be used with email."
)


def write(tmp_path: Path, text: str, name: str = "subscribers.csv") -> Path:
    """Write exactly these characters: no newline translation, so CRLF stays CRLF."""
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def read(
    path: Path, *, tags: Collection[str] = (), suppressions: Path | None = None
) -> list[Subscriber | Skipped]:
    with read_subscribers(path, tags=tags, suppressions=suppressions) as stream:
        return list(stream)


def skipped(rows: list[Subscriber | Skipped]) -> list[tuple[int, str, SkipReason, str]]:
    return [(r.line, r.email, r.reason, r.detail) for r in rows if isinstance(r, Skipped)]


def kept(rows: list[Subscriber | Skipped]) -> list[tuple[int, str]]:
    return [(r.line, r.email) for r in rows if isinstance(r, Subscriber)]


# --- the example file -------------------------------------------------------------------------


def test_example_file_shows_every_case() -> None:
    with read_subscribers(EXAMPLE) as stream:
        assert stream.columns == ["email", "name", "first_name", "tags", "status", "city"]
        rows = list(stream)
        counts = dict(stream.counts)

    def fields(
        email: str, name: str, first: str, tags: str, status: str, city: str
    ) -> dict[str, str]:
        values = (email, name, first, tags, status, city)
        return dict(
            zip(["email", "name", "first_name", "tags", "status", "city"], values, strict=True)
        )

    assert rows == [
        Subscriber(
            2,
            "ada@example.com",
            "Ada Lovelace",
            frozenset({"news", "events"}),
            fields("ada@example.com", "Ada Lovelace", "", "news;events", "", "London"),
        ),
        Subscriber(
            3,
            "Grace@example.org",
            "Grace",
            frozenset({"news"}),
            fields("Grace@Example.org", "", "Grace", "news", "", "New York"),
        ),
        Subscriber(
            4,
            "alan@example.net",
            "",
            frozenset({"events"}),
            fields("alan@example.net", "", "", "events", "subscribed", "Manchester"),
        ),
        Skipped(5, "margaret@example.com", SkipReason.UNSUBSCRIBED, "status is unsubscribed"),
        Skipped(6, "not-an-address", SkipReason.INVALID, "An email address must have an @-sign."),
        Skipped(7, "ADA@example.COM", SkipReason.DUPLICATE, "duplicate of line 2"),
        Subscriber(
            8,
            "katherine@example.org",
            "Johnson, Katherine",
            frozenset({"news", "events"}),
            fields(
                "katherine@example.org", "Johnson, Katherine", "", "news; Events", "", "Hampton"
            ),
        ),
        Subscriber(
            9,
            "linus@example.net",
            "Linus",
            frozenset(),
            fields("linus@example.net", "Linus", "", "", "", "Helsinki"),
        ),
    ]
    assert counts == {
        "ok": 5,
        "invalid address": 1,
        "unsubscribed": 1,
        "duplicate": 1,
        "suppressed": 0,
        "not tagged": 0,
        "malformed row": 0,
        "provider cannot take it": 0,
    }


def test_subscriber_key_ignores_case() -> None:
    subscriber = Subscriber(2, "Ann.Lee@example.com", "", frozenset(), {})
    assert subscriber.key == "ann.lee@example.com"


# --- dialects and encodings -------------------------------------------------------------------


def test_excel_utf8_with_bom_crlf_and_quotes() -> None:
    with read_subscribers(DATA / "bom_crlf.csv") as stream:
        assert stream.columns == ["Email", "Name", "Tags"]  # no "\ufeffEmail"
        rows = list(stream)
    assert rows == [
        Subscriber(
            2,
            "ann@example.com",
            "Ann",
            frozenset({"news"}),
            {"Email": "ann@example.com", "Name": "Ann", "Tags": "news"},
        ),
        Subscriber(
            3,
            "bob@example.com",
            "Bob, Jr.",
            frozenset({"news", "events"}),
            {"Email": "bob@example.com", "Name": "Bob, Jr.", "Tags": "news;events"},
        ),
    ]


def test_semicolon_delimiter_is_sniffed(tmp_path: Path) -> None:
    path = write(
        tmp_path, 'email;name;city\nann@example.com;"Lee; Ann";Paris\nbob@example.com;Bob;Rome\n'
    )
    rows = read(path)
    assert rows == [
        Subscriber(
            2,
            "ann@example.com",
            "Lee; Ann",
            frozenset(),
            {"email": "ann@example.com", "name": "Lee; Ann", "city": "Paris"},
        ),
        Subscriber(
            3,
            "bob@example.com",
            "Bob",
            frozenset(),
            {"email": "bob@example.com", "name": "Bob", "city": "Rome"},
        ),
    ]


def test_tab_delimiter_is_sniffed(tmp_path: Path) -> None:
    path = write(tmp_path, "email\tname\nann@example.com\tAnn, Lee\n")
    assert [(r.email, r.name) for r in read(path) if isinstance(r, Subscriber)] == [
        ("ann@example.com", "Ann, Lee")
    ]


def test_quoted_newlines_keep_later_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'email,name,notes\r\nann@example.com,Ann,"line one\r\nline two\r\nline three"\r\n'
        "bad-address,Bad,\r\nbob@example.com,Bob,\r\n",
    )
    rows = read(path)
    assert kept(rows) == [(2, "ann@example.com"), (6, "bob@example.com")]
    assert skipped(rows) == [
        (5, "bad-address", SkipReason.INVALID, "An email address must have an @-sign.")
    ]
    assert isinstance(rows[0], Subscriber)
    assert rows[0].fields["notes"] == "line one\r\nline two\r\nline three"


def test_header_names_are_stripped_and_matched_in_any_case(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        " EMAIL , First_Name ,Tags , Status\n"
        "ann@example.com , Ann , News ; VIP ;; ,Unsubscribed\n"
        "bob@example.com,Bob,,\n",
    )
    with read_subscribers(path) as stream:
        assert stream.columns == ["EMAIL", "First_Name", "Tags", "Status"]
        rows = list(stream)
    assert rows == [
        Skipped(2, "ann@example.com", SkipReason.UNSUBSCRIBED, "status is unsubscribed"),
        Subscriber(
            3,
            "bob@example.com",
            "Bob",
            frozenset(),
            {"EMAIL": "bob@example.com", "First_Name": "Bob", "Tags": "", "Status": ""},
        ),
    ]


def test_tags_are_split_stripped_and_lowercased(tmp_path: Path) -> None:
    path = write(tmp_path, "email,tags\nann@example.com, News ; VIP ;; \n")
    [row] = read(path)
    assert isinstance(row, Subscriber)
    assert row.tags == frozenset({"news", "vip"})
    assert row.fields["tags"] == "News ; VIP ;;"


def test_a_nameless_column_is_left_out_of_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "email,name,\nann@example.com,Ann,\n")
    [row] = read(path)
    assert isinstance(row, Subscriber)
    assert row.fields == {"email": "ann@example.com", "name": "Ann"}


# --- rows that are not subscribers ------------------------------------------------------------


def test_blank_lines_are_not_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "\nemail,name\n\nann@example.com,Ann\n   \n,\nbob@example.com,Bob\n\n")
    rows = read(path)
    assert kept(rows) == [(4, "ann@example.com"), (7, "bob@example.com")]
    assert skipped(rows) == []


def test_field_count_mismatches(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "email,name,city\n"
        "ann@example.com\n"  # fewer fields: the missing ones are empty
        "bob@example.com,Bob,Paris,extra\n"  # more fields: which column is which?
        "carol@example.com,Carol,Rome,,\n",  # extra fields that are empty lose nothing
    )
    rows = read(path)
    assert rows == [
        Subscriber(
            2,
            "ann@example.com",
            "",
            frozenset(),
            {"email": "ann@example.com", "name": "", "city": ""},
        ),
        Skipped(3, "bob@example.com", SkipReason.MALFORMED, "4 fields, the header has 3"),
        Subscriber(
            4,
            "carol@example.com",
            "Carol",
            frozenset(),
            {"email": "carol@example.com", "name": "Carol", "city": "Rome"},
        ),
    ]


def test_empty_email_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "email,name\n,Ann\n")
    assert skipped(read(path)) == [(2, "", SkipReason.INVALID, "the email column is empty")]


def test_invalid_addresses_carry_the_library_reason(tmp_path: Path) -> None:
    path = write(tmp_path, "email\nann..lee@example.com\nbob@localhost\ncarol@example.test\n")
    assert skipped(read(path)) == [
        (
            2,
            "ann..lee@example.com",
            SkipReason.INVALID,
            "An email address cannot have two periods in a row.",
        ),
        (
            3,
            "bob@localhost",
            SkipReason.INVALID,
            "The part after the @-sign is not valid. It should have a period.",
        ),
        (4, "carol@example.test", SkipReason.INVALID, SPECIAL_USE),
    ]


def test_unknown_status_is_malformed_never_silent(tmp_path: Path) -> None:
    path = write(tmp_path, "email,status\nann@example.com,bounced\nbob@example.com,SUBSCRIBED\n")
    rows = read(path)
    assert skipped(rows) == [
        (
            2,
            "ann@example.com",
            SkipReason.MALFORMED,
            "unknown status 'bounced': use subscribed, unsubscribed, or leave it empty",
        )
    ]
    assert kept(rows) == [(3, "bob@example.com")]


def test_duplicates_are_found_in_any_case(tmp_path: Path) -> None:
    path = write(
        tmp_path, "email\nAnn@example.com\nbob@example.com\nann@EXAMPLE.com\nANN@example.com\n"
    )
    rows = read(path)
    assert kept(rows) == [(2, "Ann@example.com"), (3, "bob@example.com")]
    assert skipped(rows) == [
        (4, "ann@EXAMPLE.com", SkipReason.DUPLICATE, "duplicate of line 2"),
        (5, "ANN@example.com", SkipReason.DUPLICATE, "duplicate of line 2"),
    ]


def test_unsubscribed_rows_claim_their_address(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "email,status\n"
        "ann@example.com,unsubscribed\n"
        "ANN@example.com,\n"
        "bob@example.com,subscribed\n"
        "Bob@example.com,Unsubscribed\n",
    )
    rows = read(path)
    assert kept(rows) == [(4, "bob@example.com")]
    assert skipped(rows) == [
        (2, "ann@example.com", SkipReason.UNSUBSCRIBED, "status is unsubscribed"),
        (3, "ANN@example.com", SkipReason.UNSUBSCRIBED, "unsubscribed at line 2"),
        (
            5,
            "Bob@example.com",
            SkipReason.UNSUBSCRIBED,
            "unsubscribed here, but line 4 subscribes the same address and comes first: "
            "remove one of the two rows",
        ),
    ]


def test_csv_syntax_errors_are_rows_not_crashes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "email,name\n"
        'ann@example.com,"Ann"x\n'  # text after a closing quote
        "bob@example.com,Bob\n"
        'carol@example.com,"Carol\n'  # a quote never closed swallows the rest of the file
        "dan@example.com,Dan\n",
    )
    rows = read(path)
    assert kept(rows) == [(3, "bob@example.com")]
    assert skipped(rows) == [
        (2, "", SkipReason.MALFORMED, "not valid CSV (',' expected after '\"')"),
        (
            4,
            "",
            SkipReason.MALFORMED,
            "not valid CSV (unexpected end of data); "
            "lines 4-5 were read as one row: is a quote missing?",
        ),
    ]


# --- tags -------------------------------------------------------------------------------------


def test_tag_filter_keeps_subscribers_with_any_of_the_tags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "email,tags\n"
        "ann@example.com,News;Events\n"
        "bob@example.com,vip\n"
        "carol@example.com,\n"
        "dan@example.com,sport\n",
    )
    rows = read(path, tags=[" EVENTS ", "vip"])
    assert kept(rows) == [(2, "ann@example.com"), (3, "bob@example.com")]
    assert skipped(rows) == [
        (4, "carol@example.com", SkipReason.NOT_TAGGED, "has none of the tags events, vip"),
        (5, "dan@example.com", SkipReason.NOT_TAGGED, "has none of the tags events, vip"),
    ]


def test_a_single_tag_string_is_one_tag(tmp_path: Path) -> None:
    path = write(tmp_path, "email,tags\nann@example.com,news\nbob@example.com,n\n")
    assert kept(read(path, tags="news")) == [(2, "ann@example.com")]


def test_rows_outside_the_tag_filter_still_claim_their_address(tmp_path: Path) -> None:
    path = write(tmp_path, "email,tags\nann@example.com,sport\nann@example.com,news\n")
    assert skipped(read(path, tags=["news"])) == [
        (2, "ann@example.com", SkipReason.NOT_TAGGED, "has none of the tags news"),
        (3, "ann@example.com", SkipReason.DUPLICATE, "duplicate of line 2"),
    ]


def test_tag_filter_without_a_tags_column_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "email,name\nann@example.com,Ann\n")
    with pytest.raises(SubscribersError) as error:
        read_subscribers(path, tags=["news"])
    assert str(error.value).startswith(f"{path}:1: cannot pick subscribers by tag")
    assert "Add one, or send without a tag filter." in str(error.value)


# --- suppressions -----------------------------------------------------------------------------


def test_suppressed_addresses_are_skipped(tmp_path: Path) -> None:
    suppressions = write(
        tmp_path,
        "email,reason,added_at\n"
        "ANN@Example.com,complaint,2025-01-01T00:00:00+00:00\n"
        "not an address,typo,\n",
        name="suppressions.csv",
    )
    path = write(tmp_path, "email\nbob@example.com\nann@example.com\nnot an address\n")
    rows = read(path, suppressions=suppressions)
    assert kept(rows) == [(2, "bob@example.com")]
    assert skipped(rows) == [
        (
            3,
            "ann@example.com",
            SkipReason.SUPPRESSED,
            "on the suppression list (suppressions.csv, line 2)",
        ),
        (4, "not an address", SkipReason.INVALID, "An email address must have an @-sign."),
    ]


def test_a_missing_suppression_list_is_empty(tmp_path: Path) -> None:
    path = write(tmp_path, "email\nann@example.com\n")
    assert kept(read(path, suppressions=tmp_path / "suppressions.csv")) == [(2, "ann@example.com")]


def test_a_broken_suppression_list_is_an_error_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, "email\nann@example.com\n")
    suppressions = write(
        tmp_path, "address,reason\nann@example.com,bounce\n", name="suppressions.csv"
    )
    with pytest.raises(SubscribersError, match=re.escape(f"{suppressions}:1: no `email` column")):
        read_subscribers(path, suppressions=suppressions)
    write(tmp_path, 'email,reason\nann@example.com,"bounce"d\n', name="suppressions.csv")
    with pytest.raises(SubscribersError) as error:
        read_subscribers(path, suppressions=suppressions)
    assert str(error.value).startswith(f"{suppressions}:2: not valid CSV")
    assert "must never be missed" in str(error.value)


def test_append_suppressions_creates_the_file_with_its_header(tmp_path: Path) -> None:
    path = tmp_path / "suppressions.csv"
    added = append_suppressions(
        path,
        [
            ("Ann@EXAMPLE.com", "unsubscribed"),
            ("bob@example.com", "bounce"),
            ("ANN@example.com", "again"),
        ],
    )
    assert added == 2
    lines = path.read_text().splitlines()
    assert lines[0] == "email,reason,added_at"
    assert [line.rsplit(",", 1)[0] for line in lines[1:]] == [
        "Ann@example.com,unsubscribed",
        "bob@example.com,bounce",
    ]
    for line in lines[1:]:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", line.rsplit(",", 1)[1])


def test_append_suppressions_skips_addresses_already_listed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "email,reason,added_at\nann@example.com,complaint,2025-01-01T00:00:00+00:00",
        name="suppressions.csv",
    )
    assert (
        append_suppressions(path, [("ANN@example.com", "bounce"), ("carol@example.com", "bounce")])
        == 1
    )
    assert append_suppressions(path, [("Carol@Example.com", "bounce")]) == 0
    lines = path.read_text().splitlines()
    assert lines[:2] == [
        "email,reason,added_at",
        "ann@example.com,complaint,2025-01-01T00:00:00+00:00",
    ]
    assert [line.split(",")[:2] for line in lines[2:]] == [["carol@example.com", "bounce"]]


def test_append_suppressions_follows_the_existing_columns_and_delimiter(tmp_path: Path) -> None:
    path = write(tmp_path, "added_at;Email;note;reason\r\n", name="suppressions.csv")
    assert append_suppressions(path, [("ann@example.com", "bounce; hard")]) == 1
    [header, row] = path.read_bytes().decode().split("\r\n")[:2]
    assert header == "added_at;Email;note;reason"
    assert re.fullmatch(r'[0-9T:+-]{25};ann@example\.com;;"bounce; hard"', row)


def test_appended_suppressions_are_read_back(tmp_path: Path) -> None:
    suppressions = tmp_path / "suppressions.csv"
    append_suppressions(suppressions, [("bob@example.com", "bounce")])
    path = write(tmp_path, "email\nann@example.com\nBOB@example.com\n")
    assert kept(read(path, suppressions=suppressions)) == [(2, "ann@example.com")]


def test_append_suppressions_fsyncs_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    append_suppressions(tmp_path / "suppressions.csv", [("ann@example.com", "bounce")])
    assert len(synced) == 2  # the new file, then its directory entry


def test_append_suppressions_refuses_an_empty_address(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="has no address"):
        append_suppressions(tmp_path / "suppressions.csv", [("  ", "bounce")])


# --- whole-file errors ------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(SubscribersError) as error:
        read_subscribers(path)
    assert str(error.value) == (
        f"{path}: no such file. Check the path; a subscriber list is a CSV file with an "
        "`email` column (see subscribers.example.csv)."
    )


@pytest.mark.parametrize("text", ["", "\n\n  \r\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SubscribersError) as error:
        read_subscribers(path)
    assert str(error.value) == (
        f"{path}: the file is empty. A subscriber list starts with a header line such as "
        "`email,name,tags`, then one subscriber per line."
    )


def test_no_email_column_lists_the_header_found(tmp_path: Path) -> None:
    path = write(tmp_path, "Name,Mail\nAnn,ann@example.com\n")
    with pytest.raises(SubscribersError) as error:
        read_subscribers(path)
    assert str(error.value) == (
        f"{path}:1: no `email` column; the header has 'Name', 'Mail' (split at ','). Name the "
        "column of addresses `email`, and separate columns with commas, semicolons or tabs."
    )


def test_a_column_twice_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "email,Name,name\n")
    with pytest.raises(
        SubscribersError, match=re.escape(f"{path}:1: the column 'name' appears twice")
    ):
        read_subscribers(path)


def test_a_broken_header_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, '"email"x,name\n')
    with pytest.raises(
        SubscribersError, match=re.escape(f"{path}:1: the header line is not valid CSV")
    ):
        read_subscribers(path)


def test_latin1_names_the_line_and_says_save_as_utf8() -> None:
    path = DATA / "latin1.csv"
    with pytest.raises(SubscribersError) as error:
        read_subscribers(path)
    assert str(error.value) == (
        f"{path}:3: not UTF-8: byte 0xEB in 'zoe@example.com,Zoë' looks like Latin-1 or "
        f"Windows-1252. {SAVE_AS_UTF8}"
    )


def test_binary_data_names_the_line() -> None:
    path = DATA / "binary.csv"
    with pytest.raises(SubscribersError) as error:
        read_subscribers(path)
    assert (
        str(error.value)
        == f"{path}:3: binary data, not text: this is not a CSV file. {SAVE_AS_UTF8}"
    )


def test_nul_byte_names_the_line() -> None:
    path = DATA / "nul_byte.csv"
    with pytest.raises(SubscribersError) as error:
        read_subscribers(path)
    assert str(error.value) == (
        f"{path}:3: contains a NUL byte, so it is not CSV text (a spreadsheet or UTF-16 "
        f"export?). {SAVE_AS_UTF8}"
    )


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("utf16.csv", 'UTF-16 text (Excel\'s "Unicode Text")'),
        ("xlsx_renamed.csv", "a zip file, such as an Excel workbook (.xlsx)"),
    ],
)
def test_spreadsheet_exports_that_are_not_csv(name: str, kind: str) -> None:
    path = DATA / name
    with pytest.raises(SubscribersError) as error:
        read_subscribers(path)
    assert str(error.value) == f"{path}: this is {kind}, not CSV. {SAVE_AS_UTF8}"


def test_encoding_is_checked_across_chunk_boundaries(tmp_path: Path) -> None:
    # Read in 1 MB chunks: an "é" split by the first boundary is fine, a Latin-1 byte after is not.
    rows = "email,name\n" + "".join(f"u{i}@example.com,{'x' * 100}\n" for i in range(8_000))
    last = "a@example.com,"
    text = rows + last + "y" * (1024 * 1024 - 1 - len(rows) - len(last)) + "é\nb@example.com,B\n"
    path = write(tmp_path, text)
    assert path.read_bytes()[1024 * 1024 - 1 : 1024 * 1024 + 1] == "é".encode()
    assert kept(read(path))[-2:] == [(8_002, "a@example.com"), (8_003, "b@example.com")]
    path.write_bytes(text.encode() + "c@example.com,Zoë\n".encode("latin-1"))
    with pytest.raises(SubscribersError, match=re.escape(f"{path}:8004: not UTF-8: byte 0xEB")):
        read_subscribers(path)
    # Half a character at the end of the first chunk, then plain ASCII: still that line.
    path.write_bytes(text.encode().replace("é".encode(), b"\xc3z"))
    with pytest.raises(SubscribersError, match=re.escape(f"{path}:8002: not UTF-8: byte 0xC3")):
        read_subscribers(path)


# --- the stream -------------------------------------------------------------------------------


def test_closing_removes_the_scratch_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    path = write(tmp_path, "email\nann@example.com\nbob@example.com\n")

    stream = read_subscribers(path)
    assert next(stream) == Subscriber(
        2, "ann@example.com", "", frozenset(), {"email": "ann@example.com"}
    )
    assert stream.counts["ok"] == 1
    assert len(list(scratch.iterdir())) == 1
    stream.close()
    stream.close()
    assert list(scratch.iterdir()) == []
    assert list(stream) == []

    with read_subscribers(path) as stream:
        assert len(list(stream)) == 2
        assert list(scratch.iterdir()) == []  # gone at the end of the file, before close


def test_the_stream_can_be_read_from_another_thread(tmp_path: Path) -> None:
    path = write(tmp_path, "email\nann@example.com\nann@example.com\n")
    with read_subscribers(path) as stream, ThreadPoolExecutor(1) as pool:
        rows = pool.submit(list, stream).result()
    assert kept(rows) == [(2, "ann@example.com")]
    assert skipped(rows) == [(3, "ann@example.com", SkipReason.DUPLICATE, "duplicate of line 2")]


# --- addresses --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fast", "normalised"),
    [
        ("ann@example.com", "ann@example.com", "ann@example.com"),
        ("Ann.Lee@EXAMPLE.Com", "Ann.Lee@example.com", "Ann.Lee@example.com"),
        (
            "o'brien+news@mail.example.org",
            "o'brien+news@mail.example.org",
            "o'brien+news@mail.example.org",
        ),
        ("INFO@Example.net", "info@example.net", "info@example.net"),  # RFC 2142: lowercased
        ("PostMaster@example.com", "postmaster@example.com", "postmaster@example.com"),
        # Left to the library: valid but not plain.
        ("ann@xn--bcher-kva.example", None, "ann@bücher.example"),
        ("zoë@example.com", None, "zoë@example.com"),
        ("a" * 65 + "@example.com", None, "a" * 65 + "@example.com"),
        ("ann@contest.com", "ann@contest.com", "ann@contest.com"),
        ("ann@test.example.com", "ann@test.example.com", "ann@test.example.com"),
    ],
)
def test_fast_path_and_library_agree(raw: str, fast: str | None, normalised: str) -> None:
    assert fast_normalise(raw) == fast
    assert validate_address(raw) == normalised


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("ann@example.test", SPECIAL_USE),
        ("ann@mail.LOCAL", SPECIAL_USE),
        (
            "ann@ab--cd.example.com",
            "An email address cannot have two letters followed by two dashes immediately after "
            "the @-sign or after a period, except Punycode.",
        ),
        ("ann@-example.com", "An email address cannot have a hyphen immediately after the @-sign."),
        (
            "ann@example.123",
            "The part after the @-sign is not valid. It is not within a valid top-level domain.",
        ),
        ('"ann"@example.com', "Quoting the part before the @-sign is not allowed here."),
        (
            "Ann <ann@example.com>",
            "A display name and angle brackets around the email address are not permitted here.",
        ),
        ("ann@[192.0.2.1]", "A bracketed IP address after the @-sign is not allowed here."),
        (
            "ann@" + "a" * 64 + ".com",
            "After the @-sign, periods cannot be separated by so many characters "
            "(1 character too many).",
        ),
    ],
)
def test_fast_path_leaves_what_the_library_rejects_to_the_library(raw: str, message: str) -> None:
    assert fast_normalise(raw) is None
    with pytest.raises(ValueError) as error:
        validate_address(raw)
    assert str(error.value) == message


def _addresses(
    local: st.SearchStrategy[str], label: st.SearchStrategy[str]
) -> st.SearchStrategy[str]:
    return st.builds(
        lambda *parts: f"{parts[0]}@{'.'.join([*parts[1], parts[2]])}",
        local,
        st.lists(label, max_size=4),
        label,
    )


# Plain addresses, so that many reach the fast path, then every awkward part, then any text.
_ADDRESS = st.one_of(
    _addresses(
        st.text(alphabet="abXY09._+-'", min_size=1, max_size=12),
        st.one_of(
            st.text(alphabet="abXY09-", min_size=1, max_size=10),
            st.sampled_from(
                ["com", "ORG", "test", "TEST", "local", "localhost", "arpa", "invalid", "onion"]
            ),
        ),
    ),
    _addresses(
        st.one_of(
            st.text(alphabet="aZ09._+-'!#$%&*/=?^`{|}~\"@ é<>()[]\\", max_size=70),
            st.sampled_from(["info", "INFO", "Sales", "postmaster", "a" * 64, "a" * 65]),
        ),
        st.one_of(
            st.text(alphabet="aZ09-_é", max_size=70),
            st.sampled_from(
                ["xn--bcher-kva", "XN--P1AI", "ab--cd", "c0m", "123", "a" * 63, "a" * 64]
            ),
        ),
    ),
    st.text(max_size=300),
)


# 500 examples a run (each run draws new ones); NEWSLETTER_PROPERTY_SCALE=20 for a long look.
@settings(max_examples=500 * int(os.environ.get("NEWSLETTER_PROPERTY_SCALE", "1")), deadline=None)
@given(_ADDRESS)
def test_what_the_fast_path_accepts_the_library_accepts_identically(raw: str) -> None:
    fast = fast_normalise(raw)
    if fast is not None:
        assert email_validator.validate_email(raw, check_deliverability=False).normalized == fast


# --- through send: a bad list stops it before anything is sent; a bad row is skipped -------


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return bare_workspace(tmp_path / "ws", monkeypatch)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "list.csv: the file is empty"),
        (b"\n\n \n", "list.csv: the file is empty"),
        (bytes(range(256)) * 4, "list.csv:1: contains a NUL byte, so it is not CSV text"),
        (b"mail,name\nann@example.com,Ann\n", "list.csv:1: no `email` column; the header has"),
        (b"email,name," + b"x" * 200_000 + b"\n", "list.csv:1: the header line is not valid CSV"),
    ],
    ids=["empty", "blank-lines", "binary", "wrong-header", "gigantic-header"],
)
def test_a_bad_list_gets_its_message_and_exit_1_before_anything_is_sent(
    ws: Path, content: bytes, expected: str
) -> None:
    (ws / "list.csv").write_bytes(content)
    for extra in (["--dry-run"], ["--yes"]):
        result = cli("send", SAMPLE, "--to", "list.csv", *extra)
        assert_clean_exit(result, 1)
        assert expected in said(result)
    assert not (ws / "outbox").exists()


def test_a_gigantic_field_is_a_malformed_row_with_its_line_and_the_rest_is_sent(
    ws: Path,
) -> None:
    rows = ["email,name", "ann@example.com,Ann", "bob@example.com," + "B" * 300_000]
    rows += ["carol@example.com,Carol", 'dave@example.com,"Dave\nBcc: all@example.net"']
    rows += ["erin@example.com,Erin"]
    (ws / "list.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = cli("send", SAMPLE, "--to", "list.csv", "--yes", "--verbose")
    assert_clean_exit(result, 0)
    out = said(result)
    assert (
        "line 3: (empty): malformed row: not valid CSV (field larger than field limit (131072))"
        in out
    )
    assert "line 5: dave@example.com: malformed row: the name contains a line break" in out
    assert outbox_to(ws) == [
        "Ann <ann@example.com>",
        "Carol <carol@example.com>",
        "Erin <erin@example.com>",
    ]


def outbox_to(ws: Path) -> list[str]:
    return sorted(
        str(email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["To"])
        for p in files_under(ws / "outbox")
    )


PEAK_MEMORY_SCRIPT = """
import sys
from pathlib import Path
from newsletter.lists.subscribers import read_subscribers
n = 0
with read_subscribers(Path(sys.argv[1])) as stream:
    for row in stream:
        n += 1
# VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(n, peak.split()[1])
"""


def rows_and_peak_kb(path: Path) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY_SCRIPT, str(path)],
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_a_big_list_streams_in_constant_memory(tmp_path: Path) -> None:
    """Ten times the rows, the same memory: the list is never held (test_soak reads 200 MB)."""
    small, big = tmp_path / "small.csv", tmp_path / "big.csv"
    small.write_text(readers(10_000), encoding="utf-8")
    big.write_text(readers(100_000), encoding="utf-8")
    rows_small, peak_small = rows_and_peak_kb(small)
    rows_big, peak_big = rows_and_peak_kb(big)
    assert (rows_small, rows_big) == (10_000, 100_000)
    # 100,000 subscribers held in memory would take some 30 MB more
    assert peak_big - peak_small < 4_000, (peak_small, peak_big)
