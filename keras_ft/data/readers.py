"""Data files -> (`file:line`, raw record) pairs, streamed.

JSONL is read line by line, so files larger than memory work; JSON arrays and
objects are scanned element by element to know each record's line. A bad
record comes out as a `DataError` in its place (the consumer decides whether
to raise or to count a skip); problems that spoil the rest of a file (a broken
JSON document, a CSV/Parquet header that fits no record shape) raise.
Undecodable bytes are kept as lone surrogates so the error names the field.
A text file that starts with a UTF-16 or UTF-32 byte-order mark is refused
with a hint to save it as UTF-8 (decoding it as UTF-8 reads NULs and noise).

CSV fields may be up to `CSV_FIELD_MAX_CHARS` long (Python's csv module stops
at 131,072 characters by default; its limit is raised only while this module
parses a row and restored after). A longer field makes its record a bad
record (`field_too_long`); one past `CSV_PARSER_MAX_CHARS` means the parser
cannot find where the record ends (usually an unbalanced quote), so the file
is refused.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from pathlib import Path
from typing import Any, Iterator

from keras_ft.data.records import (
    BAD_TEXT,
    DataError,
    FieldMapping,
    check_columns,
    detect_shape,
)

# A field this long makes its CSV record a bad record (counted when skipping).
CSV_FIELD_MAX_CHARS = 1 << 24  # 16,777,216 characters, ~4M tokens
# csv's own limit while parsing: past it the parser loses the record's end.
CSV_PARSER_MAX_CHARS = 4 * CSV_FIELD_MAX_CHARS
# Byte-order marks of encodings that UTF-8 decoding would turn into noise;
# UTF-32 first, as its little-endian mark starts with UTF-16's.
_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)

SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
}


def list_data_files(path: str | Path) -> list[Path]:
    """The data files at `path`: the file itself, or a directory's, sorted.

    Raises:
        DataError: if the path does not exist, has an unknown suffix, or is a
            directory without data files.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and _format(p)
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise DataError(
                f"holds no data files ({', '.join(SUFFIXES)}, optionally .gz).",
                location=str(path),
                reason="empty_file",
            )
        return files
    if not path.exists():
        raise DataError(
            "does not exist. Pass a data file or directory, "
            "`tfds:NAME[/CONFIG][:SPLIT]` or `kaggle:OWNER/DATASET[/FILE]`.",
            location=str(path),
            reason="missing_file",
        )
    if _format(path) is None:
        raise DataError(
            f"has an unknown suffix; use one of {list(SUFFIXES)} (optionally .gz).",
            location=str(path),
            reason="bad_format",
        )
    return [path]


def _format(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return SUFFIXES.get(suffixes[-1]) if suffixes else None


def read_file(path: str | Path, mapping: FieldMapping | None = None) -> Iterator[tuple[str, Any]]:
    """Yields (`file:line`, record) pairs; a bad record comes as a DataError.

    Args:
        path: a JSON, JSONL, CSV or Parquet file (JSON/JSONL/CSV may be .gz).
        mapping: field renames, used to check CSV/Parquet headers up front.

    Raises:
        DataError: for problems that spoil the whole file (a broken JSON
            document, a CSV/Parquet header that fits no record shape).
    """
    path = Path(path)
    if path.is_dir() or not path.exists() or _format(path) is None:
        list_data_files(path)  # raises the matching DataError
        raise DataError(
            "is a directory; read its files (see `list_data_files`).",
            location=str(path),
            reason="bad_format",
        )
    readers = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet}
    return _guard(readers[_format(path)](path, mapping), path)


def _guard(records: Iterator[tuple[str, Any]], path: Path) -> Iterator[tuple[str, Any]]:
    try:
        yield from records
    except (OSError, EOFError, zlib.error) as e:  # unreadable, truncated .gz, ...
        raise DataError(
            f"could not be read ({type(e).__name__}: {e}).", location=str(path), reason="unreadable"
        ) from None


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _check_encoding(f, path: Path) -> None:
    """Refuses a text file whose byte-order mark says UTF-16/UTF-32."""
    head = f.peek(4)[:4]
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            raise DataError(
                f"looks like {encoding} (it starts with a {encoding} byte-order mark); "
                'save it as UTF-8 (e.g. in your editor\'s "Save as" encoding '
                f"menu, or `iconv -f {encoding} -t UTF-8`).",
                location=str(path),
                reason="bad_encoding",
            )


def _empty(path: Path, what: str = "is empty") -> tuple[str, DataError]:
    return str(path), DataError(
        f"{what}; it holds no records.", location=str(path), reason="empty_file"
    )


def _read_jsonl(path: Path, mapping) -> Iterator[tuple[str, Any]]:
    found = False
    with _open(path) as f:
        _check_encoding(f, path)
        for number, raw in enumerate(f, 1):
            line = raw.decode("utf-8", "surrogateescape")
            if number == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip(_JSON_WS):
                continue  # blank lines hold no data
            found = True
            location = f"{path}:{number}"
            yield location, _parse_line(line, location)
    if not found:
        yield _empty(path)


def _parse_line(line: str, location: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        if BAD_TEXT.search(line):
            return DataError(
                "Line holds bytes that are not valid UTF-8.",
                location=location,
                reason="non_utf8",
                received=line.strip(),
            )
        return DataError(
            f"Line is not valid JSON ({e.msg} at column {e.colno}).",
            location=location,
            reason="malformed_json",
            received=line.strip(),
        )
    except RecursionError:
        return DataError(
            "Line nests JSON too deeply to read.",
            location=location,
            reason="malformed_json",
            received=line.strip(),
        )


def _read_json(path: Path, mapping) -> Iterator[tuple[str, Any]]:
    with _open(path) as f:
        _check_encoding(f, path)
        text = f.read().decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    lines = _LineCounter(text)
    start = _skip_ws(text, 0)
    if start == len(text):
        yield _empty(path)
        return
    if text[start] not in "[{":
        raise DataError(
            "must hold a JSON array of records or an object whose values "
            "are records (or use .jsonl for one record per line).",
            location=f"{path}:{lines.line(start)}",
            reason="not_a_record",
        )
    members, end = _scan(text, start, path, lines)
    rest = _skip_ws(text, end)
    if rest != len(text) and text[start] == "{" and "\n" in text[end:rest]:
        # One object per line in a .json file (Kaggle's News Category is one).
        del text, members
        yield from _read_jsonl(path, mapping)
        return
    if rest != len(text):
        raise DataError(
            "has extra data after the top-level JSON value.",
            location=f"{path}:{lines.line(_skip_ws(text, end))}",
            reason="malformed_json",
        )
    if text[start] == "{":
        members = _object_records(text, members, path, lines)
    if not members:
        yield _empty(path, "holds an empty container")
    for pos, value in members:
        yield f"{path}:{lines.line(pos)}", value


def _object_records(text, members, path, lines):
    """Records of a top-level object: {id: record, ...}, {name: [records]}, or
    the object itself when it is one record."""
    keys = [key for _, _, key in members]
    values = [value for _, value, _ in members]
    if values and all(isinstance(v, dict) for v in values):
        return [(pos, value) for pos, value, _ in members]
    if detect_shape(keys) is not None:
        return [(_skip_ws(text, 0), dict(zip(keys, values)))]
    if len(members) == 1 and isinstance(values[0], list):
        inner, _ = _scan(text, members[0][0], path, lines)
        return inner
    raise DataError(
        "is a JSON object that is neither a record, an object of records, nor {name: [records]}.",
        location=f"{path}:1",
        reason="not_a_record",
    )


class _LineCounter:
    """Line numbers of increasing offsets in a text, counted incrementally."""

    def __init__(self, text: str):
        self.text, self.pos, self.count = text, 0, 1

    def line(self, pos: int) -> int:
        if pos < self.pos:
            return self.text.count("\n", 0, pos) + 1
        self.count += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.count


_JSON_WS = " \t\n\r"
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def _skip_ws(text: str, pos: int) -> int:
    return _WS.match(text, pos).end()


def _scan(text: str, pos: int, path: Path, lines: _LineCounter):
    """Parses the array/object at `pos`; returns [(value offset, value[, key])], end."""
    is_object, close = text[pos] == "{", "}" if text[pos] == "{" else "]"
    members, pos = [], _skip_ws(text, pos + 1)
    try:
        if text.startswith(close, pos):
            return members, pos + 1
        while True:
            key = None
            if is_object:
                key, pos = _DECODER.raw_decode(text, pos)
                pos = _skip_ws(text, pos)
                if not text.startswith(":", pos) or not isinstance(key, str):
                    raise json.JSONDecodeError("Expecting ':' after a key", text, pos)
                pos = _skip_ws(text, pos + 1)
            value_pos = pos
            value, pos = _DECODER.raw_decode(text, pos)
            members.append((value_pos, value) + ((key,) if is_object else ()))
            pos = _skip_ws(text, pos)
            if text.startswith(close, pos):
                return members, pos + 1
            if not text.startswith(",", pos):
                raise json.JSONDecodeError(f"Expecting ',' or '{close}'", text, pos)
            pos = _skip_ws(text, pos + 1)
    except RecursionError:
        raise DataError(
            "nests JSON too deeply to read.", location=f"{path}:1", reason="malformed_json"
        ) from None
    except json.JSONDecodeError as e:
        raise DataError(
            f"is not valid JSON ({e.msg}); the rest of the file cannot be read, "
            "so this is not skippable. Fix the file (or convert it to JSONL).",
            location=f"{path}:{lines.line(e.pos)}",
            reason="malformed_json",
        ) from None


def _read_csv(path: Path, mapping) -> Iterator[tuple[str, Any]]:
    with _open(path) as f:
        _check_encoding(f, path)
        text = io.TextIOWrapper(f, "utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.DictReader(text)
        try:
            header = _csv_step(lambda: reader.fieldnames)
        except csv.Error as e:
            raise _csv_error(
                "has an unreadable CSV header: ", e, f"{path}:1", "bad_header"
            ) from None
        if header is None:
            yield _empty(path)
            return
        check_columns(header, mapping, f"{path}:1")
        found, end = False, reader.line_num
        while True:
            try:
                row = _csv_step(lambda: next(reader))
            except StopIteration:
                break
            except csv.Error as e:
                raise _csv_error("is not valid CSV: ", e, f"{path}:{end + 1}", "bad_row") from None
            location, end, found = f"{path}:{end + 1}", reader.line_num, True
            yield location, _check_row(row, len(header), location)
    if not found:
        yield _empty(path, "has a header but no rows")


def _csv_step(step):
    """Runs one csv parsing step under this module's field size limit.

    csv's limit is process-wide, so it is raised for the step alone and
    restored before the generator hands a row to its consumer.
    """
    previous = csv.field_size_limit(CSV_PARSER_MAX_CHARS)
    try:
        return step()
    finally:
        csv.field_size_limit(previous)


def _csv_error(what: str, error: csv.Error, location: str, reason: str) -> DataError:
    """A DataError for what the csv module refused: "<what><its message>."."""
    return DataError(f"{what}{_csv_message(error)}.", location=location, reason=reason)


def _csv_message(error: csv.Error) -> str:
    if "field larger than field limit" not in str(error):
        return str(error)
    return (
        f"a field runs past {CSV_PARSER_MAX_CHARS:,} characters, so the parser "
        'cannot find where this record ends (often an unbalanced `"` quote '
        "that makes the rest of the file one field); the rest of the file "
        "cannot be read, so this is not skippable. Fix the quoting"
    )


def _check_row(row: dict, num_columns: int, location: str) -> Any:
    if None in row:
        return DataError(
            f"has {num_columns + len(row[None])} values but the header "
            f"names {num_columns} columns.",
            location=location,
            reason="bad_row",
            received=row[None],
        )
    missing = [k for k, v in row.items() if v is None]
    if missing:
        return DataError(
            f"has only {num_columns - len(missing)} of {num_columns} values.",
            location=location,
            field=missing[0],
            reason="bad_row",
        )
    for key, value in row.items():
        if len(value) > CSV_FIELD_MAX_CHARS:
            return DataError(
                f"is {len(value):,} characters long; a CSV field may "
                f"hold at most {CSV_FIELD_MAX_CHARS:,}.",
                location=location,
                field=key,
                reason="field_too_long",
                received=value[:60],
            )
    return row


def _read_parquet(path: Path, mapping) -> Iterator[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq  # heavy: pyarrow (optional)
    except ImportError:
        raise DataError(
            "needs pyarrow to read Parquet: pip install pyarrow.",
            location=str(path),
            reason="bad_format",
        ) from None
    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises its own ArrowInvalid/OSError mix
        raise DataError(
            f"is not a readable Parquet file: {e}.", location=str(path), reason="bad_format"
        ) from None
    check_columns(parquet.schema_arrow.names, mapping, f"{path}:header")
    if parquet.metadata.num_rows == 0:
        yield _empty(path, "has no rows")
        return
    number = 0  # "line" of a Parquet record = its 1-based row number
    for batch in parquet.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            number += 1
            yield f"{path}:{number}", row
