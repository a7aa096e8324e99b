"""Streaming readers for NDJSON and CSV that know the byte offset after every record.

The offset is what a checkpoint stores, so an interrupted import can seek straight past the
records already committed. Only one line (or one CSV row) is held at a time.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from profilehub.config import DEFAULT_MAX_BODY_BYTES


class SourceError(ValueError):
    """The file cannot be read as the format asked for (not a per-record problem)."""


@dataclass(frozen=True)
class SourceRecord:
    line: int  # 1-based line of the record's start in the file
    end_offset: int  # byte offset just after the record
    raw: str  # the record as read, for the rejects file
    data: dict[str, Any] | None  # None when the record could not be parsed
    error: str | None = None  # why it could not be parsed


# The first bytes of compressed files and archives someone may hand an import as they came from
# an export: read as text, each would be a stream of unreadable records.
_COMPRESSED = (
    (b"\x1f\x8b", "gzip-compressed", "gunzip -k FILE"),
    (b"BZh", "bzip2-compressed", "bunzip2 -k FILE"),
    (b"\xfd7zXZ\x00", "xz-compressed", "unxz -k FILE"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "unzstd FILE"),
    (b"PK\x03\x04", "a zip archive", "unzip FILE"),
)


def refuse_compressed(path: Path) -> None:
    """A compressed file or archive is refused before it is read, saying what it is: imports read
    plain UTF-8 text."""
    with path.open("rb") as f:
        head = f.read(8)
    for magic, what, command in _COMPRESSED:
        if head.startswith(magic) and (magic != b"BZh" or head[3:4].isdigit()):
            raise SourceError(
                f"{path}: the file is {what}; profilehub imports plain UTF-8 NDJSON or CSV: "
                f"decompress it first ({command.replace('FILE', str(path))}) and import the result"
            )


def _lines(f: BinaryIO, offset: int, line: int) -> Iterator[tuple[int, int, bytes]]:
    """(line number, offset after the line, line bytes) from ``offset`` on."""
    f.seek(offset)
    for chunk in f:
        line += 1
        offset += len(chunk)
        yield line, offset, chunk


def read_ndjson(
    path: Path, offset: int = 0, line: int = 0, max_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> Iterator[SourceRecord]:
    """One JSON object per line; blank lines are skipped, a bad line is a record with an error (a
    line longer than ``max_bytes`` too: ``ndjson_lines``)."""
    for number, end, text, too_large in ndjson_lines(path, offset, line, max_bytes):
        data, error = (None, too_large) if too_large else parse_ndjson(number, text)
        yield SourceRecord(number, end, text.decode("utf-8", errors="replace"), data, error)


# (line number, the byte offset after the line, its text stripped, why it is refused when it is
# over the size limit): of a line over the limit, only its first ``TOO_LARGE_HEAD`` bytes. A plain
# tuple: a NamedTuple cost ~1.5 us a line on the bulk import's reading thread.
NdjsonLine = tuple[int, int, bytes, str | None]


# Of a line over the limit, the start kept for the rejects file (which person it was), as a CSV
# row that cannot be read keeps its first 2,000 characters.
TOO_LARGE_HEAD = 2000
_SKIP_BYTES = 1 << 20  # the rest of such a line is read past this much at a time, never held


def ndjson_lines(
    path: Path, offset: int = 0, line: int = 0, max_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> Iterator[NdjsonLine]:
    """``read_ndjson`` before parsing: each line that is not blank, stripped.

    A line longer than ``max_bytes`` (the API's body limit: a record the API would answer 413) is
    refused at its line, and read without being held: a 2 GB JSON array on one line costs no more
    memory than a line of ``max_bytes``."""
    with path.open("rb") as f:
        f.seek(offset)
        readline = f.readline
        while True:
            # The line, its \r\n, and a byte more: a line that long or longer is over the limit.
            chunk = readline(max_bytes + 2)
            if not chunk:
                return
            line += 1
            offset += len(chunk)
            if len(chunk) <= max_bytes or len(chunk.rstrip(b"\r\n")) <= max_bytes:
                if text := chunk.strip():
                    yield line, offset, text, None
                continue
            size, last = len(chunk.rstrip(b"\r\n")), chunk
            while not last.endswith(b"\n"):
                last = f.readline(_SKIP_BYTES)
                if not last:
                    break
                offset += len(last)
                size += len(last.rstrip(b"\r\n"))
            yield line, offset, chunk[:TOO_LARGE_HEAD].strip(), _too_large(line, size, max_bytes)


def _too_large(line: int, size: int, max_bytes: int) -> str:
    return (
        f"line {line}: the record is {size:,} bytes, more than the {max_bytes:,} the API takes in a "
        "request body (PROFILEHUB_MAX_BODY_BYTES; a larger body is answered 413)"
    )


# A run of 20 digits: an integer literal orjson may read as a float (1e+23 for 10**23), where the
# API's parser (``json.loads``, as Starlette's) reads the integer, for the checks to refuse by name.
_LONG_DIGITS = re.compile(rb"[0-9]{20}")


def parse_ndjson(number: int, text: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """The record on line ``number``, or None and why it cannot be read: what the API's parser
    makes of the same body (orjson where both agree, being faster), so that a value the API
    refuses naming its field (NaN, a lone surrogate, an integer beyond 64 bits) is refused by the
    import in the same words rather than read otherwise or called unreadable."""
    try:
        data = json.loads(text) if _LONG_DIGITS.search(text) else orjson.loads(text)
    except (ValueError, RecursionError) as exc:
        try:  # NaN, Infinity and lone surrogates: orjson refuses what json.loads reads
            data = json.loads(text)
        except (ValueError, RecursionError):
            return None, f"line {number}: not valid JSON ({exc})"
    if isinstance(data, list):
        # A JSON array of records (an export, say) instead of NDJSON: say what the file must be.
        return None, (
            f"line {number}: a JSON array, expected a JSON object: the file must hold one object per "
            "line (NDJSON; `jq -c '.[]' FILE` turns an array of objects into that)"
        )
    if not isinstance(data, dict):
        return None, f"line {number}: expected a JSON object"
    return data, None


@dataclass(frozen=True)
class ColumnMapping:
    """CSV column -> dotted path in the record (``ids.email``, ``upsert.profile.first_name``).

    ``example`` is the ``--map`` shown in messages, in the words of the record being imported (a
    CRM person's fields are not a CDP profile's paths). ``objects`` are the top-level fields every
    row carries, as an empty object when no cell fills them: a CSV has no way to leave a required
    object out (a CDP write's ``upsert``), and an empty cell says nothing. ``lists`` are the
    top-level fields whose cell is the one item of a list (a person's ``emails``): a cell holds
    text, the body wants an array.
    """

    paths: Mapping[str, str]
    example: str = "email=ids.email"
    objects: tuple[str, ...] = ()
    lists: tuple[str, ...] = ()

    @classmethod
    def parse(
        cls,
        options: tuple[str, ...] | list[str],
        example: str = "email=ids.email",
        objects: tuple[str, ...] = (),
        lists: tuple[str, ...] = (),
    ) -> ColumnMapping:
        paths: dict[str, str] = {}
        target = "PATH" if "." in example else "FIELD"
        for option in options:
            column, sep, path = option.partition("=")
            if not sep or not column.strip() or not path.strip():
                raise SourceError(f"--map {option!r}: expected COLUMN={target}, e.g. {example}")
            paths[column.strip()] = path.strip()
        return cls(paths, example, objects, lists)

    def for_header(self, header: list[str]) -> dict[int, list[str]]:
        """Column index -> path parts. Unmapped columns that are paths themselves map to themselves."""
        missing = sorted(set(self.paths) - set(header))
        read = [c for c in header if c in self.paths or "." in c]
        if twice := sorted({c for c in read if read.count(c) > 1}):
            # Which of the two would be read is no choice to make silently.
            raise SourceError(f"the CSV header has column(s) {', '.join(twice)} more than once; rename one")
        if missing:
            raise SourceError(
                f"--map names column(s) not in the CSV header: {', '.join(missing)}; "
                f"the header's columns are: {', '.join(header)}"
            )
        out: dict[int, list[str]] = {}
        for index, column in enumerate(header):
            path = self.paths.get(column) or (column if "." in column else None)
            if path:
                out[index] = path.split(".")
        return out


def _nest(columns: dict[int, list[str]], row: list[str], mapping: ColumnMapping) -> dict[str, Any]:
    record: dict[str, Any] = {name: {} for name in mapping.objects}
    for index, parts in columns.items():
        if index >= len(row) or row[index] == "":
            continue  # an empty cell says nothing; it does not clear an attribute
        node = record
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        one_of_a_list = len(parts) == 1 and parts[0] in mapping.lists
        node[parts[-1]] = [row[index]] if one_of_a_list else row[index]
    return record


def read_csv_header(path: Path) -> tuple[list[str], int]:
    """The header row and the byte offset just after it."""
    with path.open("rb") as f:
        first = f.readline()
        if not first.strip():
            raise SourceError(f"{path}: the CSV file has no header row")
        try:
            text = first.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SourceError(f"{path}: the CSV header is not UTF-8 text ({_not_utf8(first, exc)})") from exc
        header = [h.strip() for h in next(csv.reader([text]))]
        _refuse_other_separators(path, header, text)
        return header, len(first)


# What spreadsheets write as "CSV" in other locales: Excel where the decimal mark is a comma
# (semicolons), and exports that are tab-separated.
_OTHER_SEPARATORS = ((";", "semicolon"), ("\t", "tab"))


def _refuse_other_separators(path: Path, header: list[str], text: str) -> None:
    """A header that reads as one column but splits into several at ``;`` or a tab (unquoted) is a
    file in another dialect: read as comma-separated, every row would be one cell under a column
    named like ``email;first_name``, and every record rejected without saying why."""
    if len(header) != 1:
        return
    for separator, name in _OTHER_SEPARATORS:
        if len(next(csv.reader([text], delimiter=separator))) > 1:
            raise SourceError(
                f"{path}: the CSV header has one column, {header[0]!r}, that looks like several "
                f"separated by {name}s: the file looks {name}-separated, and profilehub reads "
                "comma-separated CSV; save it as comma-separated (in Excel: CSV UTF-8 (Comma "
                "delimited)) and import that"
            )


def _not_utf8(raw: bytes, exc: UnicodeDecodeError) -> str:
    return f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1}; save the file as UTF-8"


def csv_columns(path: Path, mapping: ColumnMapping) -> tuple[dict[int, list[str]], int, int]:
    """The mapped columns (index -> path parts), the header's width and the offset after it;
    checks the mapping against the header, so a bad ``--map`` is refused before anything is read
    or drawn."""
    header, after_header = read_csv_header(path)
    columns = mapping.for_header(header)
    if not columns:
        raise SourceError(
            f"{path}: no column is mapped; use --map COLUMN=..., e.g. --map {mapping.example} "
            f"(the header's columns are: {', '.join(header)})"
        )
    return columns, len(header), after_header


def read_csv(
    path: Path,
    mapping: ColumnMapping,
    offset: int = 0,
    line: int = 0,
    max_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Iterator[SourceRecord]:
    """Rows as nested records by ``mapping``; starts after the header when ``offset`` is 0. A
    row whose record, as a JSON body, is larger than ``max_bytes`` is refused, as the API would
    answer that body 413.

    The CSV is read strictly: a stray quote is a record that could not be parsed (a CSV error at its
    line), not a row whose cells silently ran together; so is a row with more cells than the header
    (an unquoted comma in a value: its cells after it would land in the wrong columns). A row with
    fewer cells is read, the missing ones empty.
    """
    columns, width, after_header = csv_columns(path, mapping)
    if offset == 0:
        offset, line = after_header, 1
    with path.open("rb") as f:
        position = {"line": line, "end": offset}
        chunks: list[str] = []  # the lines of the row being read, for a row that cannot be parsed
        not_utf8: list[str] = []  # why a line of the row being read is not UTF-8 text, if one is

        def text_lines() -> Iterator[str]:
            # csv.reader pulls exactly the lines of one row before yielding it, so after each row
            # ``position`` is the end of that row, even for quoted fields spanning lines.
            for number, end, chunk in _lines(f, offset, line):
                position["line"], position["end"] = number, end
                try:
                    text = chunk.decode("utf-8")
                except UnicodeDecodeError as exc:
                    # The row is refused (as a non-UTF-8 NDJSON line or API body is), not written
                    # with U+FFFD in place of what it said; the rejects file shows it so.
                    not_utf8.append(f"line {number}: not UTF-8 text ({_not_utf8(chunk, exc)})")
                    text = chunk.decode("utf-8", errors="replace")
                chunks.append(text)
                yield text

        start = line + 1
        rows = csv.reader(text_lines(), strict=True)
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return
            except csv.Error as exc:
                raw = "".join(chunks).rstrip("\r\n")
                last = position["line"]
                if "unexpected end of data" in str(exc):
                    why = f"a quoted field opened on line {start} is never closed (read to line {last})"
                else:
                    why = str(exc)
                yield SourceRecord(
                    start, position["end"], raw[:2000], None, f"line {start}: CSV error: {why}"
                )
                chunks.clear()
                not_utf8.clear()
                start = last + 1
                continue
            chunks.clear()
            raw_io = io.StringIO()
            csv.writer(raw_io).writerow(row)
            raw = raw_io.getvalue().rstrip("\r\n")
            if not_utf8:
                yield SourceRecord(start, position["end"], raw[:2000], None, not_utf8[0])
                not_utf8.clear()
                start = position["line"] + 1
                continue
            if not any(cell.strip() for cell in row):
                start = position["line"] + 1
                continue
            if len(row) > width:
                why = (
                    f"line {start}: CSV error: {len(row)} cells where the header has {width} "
                    "(a value with a comma needs quotes)"
                )
                yield SourceRecord(start, position["end"], raw[:2000], None, why)
                start = position["line"] + 1
                continue
            record = _nest(columns, row, mapping)
            if (size := len(orjson.dumps(record))) > max_bytes:  # the record as a JSON body
                why = _too_large(start, size, max_bytes)
                yield SourceRecord(start, position["end"], raw[:TOO_LARGE_HEAD], None, why)
            else:
                yield SourceRecord(start, position["end"], raw, record)
            start = position["line"] + 1
