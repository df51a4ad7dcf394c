"""File formats -> (file:line, record) pairs; bad files -> errors naming the line."""

import csv
import gzip
import json

import pytest

from keras_ft.data.readers import list_data_files, read_file
from keras_ft.data.records import DataError, FieldMapping, LoadReport, iter_examples, parse_record
from keras_ft.templates import Message

DOLLY = "databricks-dolly-15k/dolly_minillm_dev1000.jsonl"
BITEXT = "bitext-customer-support/Bitext_Sample_Customer_Support_Training_Dataset.csv"


def load(path, mapping=None, **options):
    report = LoadReport()
    examples = list(iter_examples(read_file(path, mapping), report, mapping=mapping, **options))
    return examples, report


def test_real_dolly_file_in_the_input_output_spelling(shared_data):
    path = shared_data / DOLLY
    examples, report = load(path)
    assert len(examples) == 1000 and report.shapes == {"dolly": 1000}
    first = json.loads(path.open().readline())
    assert examples[0].messages == (
        Message("user", f"{first['instruction']}\n\nContext:\n{first['input']}"),
        Message("assistant", first["output"]),
    )
    assert examples[0].source == f"{path}:1" and examples[-1].source == f"{path}:1000"
    kept, report = load(path, drop_with_context=True)
    assert len(kept) == 803 and report.num_dropped_with_context == 197


def test_original_dolly_spelling_from_a_literal_file(tmp_path):
    path = tmp_path / "dolly.jsonl"
    path.write_text(
        '{"instruction": "Name a fruit.", "context": "", "response": "Apple.", '
        '"category": "brainstorming"}\n'
        '{"instruction": "Who?", "context": "Ada wrote it.", "response": "Ada.", '
        '"category": "closed_qa"}\n'
    )
    examples, _ = load(path)
    assert [m.content for m in examples[0].messages] == ["Name a fruit.", "Apple."]
    assert examples[1].messages[0].content == "Who?\n\nContext:\nAda wrote it."


def test_json_array_records_know_their_line(tmp_path):
    records = [{"prompt": f"P{i}", "completion": f"C{i}"} for i in range(3)]
    path = tmp_path / "data.json"
    path.write_text("\ufeff" + json.dumps(records, indent=2))  # BOM, 4 lines per record
    assert [loc for loc, _ in read_file(path)] == [f"{path}:{n}" for n in (2, 6, 10)]
    assert [r for _, r in read_file(path)] == records


@pytest.mark.parametrize(
    "document, count",
    [
        ({"a": {"prompt": "P", "completion": "C"}, "b": {"prompt": "Q", "completion": "D"}}, 2),
        ({"data": [{"prompt": "P", "completion": "C"}]}, 1),
        (
            {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},
            1,
        ),
    ],
)
def test_json_objects_of_records(tmp_path, document, count):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(document, indent=1))
    examples, _ = load(path)
    assert len(examples) == count


def test_csv_with_quoted_newlines_and_real_bitext(tmp_path, shared_data):
    path = tmp_path / "data.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "completion"])
        writer.writerow(["How do I X?", "1. A\n2. B\n3. C"])
        writer.writerow(["How do I Y?", "1. D"])
    pairs = list(read_file(path))
    assert [loc for loc, _ in pairs] == [f"{path}:2", f"{path}:5"]
    assert pairs[0][1]["completion"] == "1. A\n2. B\n3. C"
    examples, _ = load(shared_data / BITEXT, FieldMapping.parse("context="))
    assert len(examples) == 4514
    assert "\n2. " in examples[0].messages[1].content
    assert "Context" not in examples[0].messages[0].content


def test_parquet_and_gzip_and_directories(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    pq.write_table(
        pa.table({"prompt": ["P1", "P2"], "completion": ["C1", "C2"]}), folder / "a.parquet"
    )
    with gzip.open(folder / "sub" / "b.jsonl.gz", "wt") as f:
        f.write('{"prompt": "P3", "completion": "C3"}\n')
    (folder / ".hidden.jsonl").write_text("not read")
    (folder / "notes.txt").write_text("not data")
    assert list_data_files(folder) == [folder / "a.parquet", folder / "sub" / "b.jsonl.gz"]
    pairs = [pair for file in list_data_files(folder) for pair in read_file(file)]
    assert [loc for loc, _ in pairs] == [
        f"{folder / 'a.parquet'}:1",
        f"{folder / 'a.parquet'}:2",
        f"{folder / 'sub' / 'b.jsonl.gz'}:1",
    ]
    assert [r["prompt"] for _, r in pairs] == ["P1", "P2", "P3"]


@pytest.mark.parametrize(
    "name, content",
    [
        ("empty.jsonl", b""),
        ("blank.jsonl", b"\n  \n"),
        ("empty.json", b"  "),
        ("empty_array.json", b"[]"),
        ("empty.csv", b""),
        ("header_only.csv", b"prompt,completion\n"),
    ],
)
def test_empty_files_error_or_count_as_a_skip(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match="holds no records") as info:
        load(path)
    assert info.value.location == str(path) and info.value.reason == "empty_file"
    examples, report = load(path, skip_bad_records=True)
    assert examples == [] and report.skipped == {"empty_file": 1}


def test_broken_json_document_names_the_line_even_when_skipping(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n {"prompt": "P", "completion": "C"},\n {"prompt": "P",,}\n]')
    with pytest.raises(DataError) as info:
        load(path, skip_bad_records=True)
    assert info.value.location == f"{path}:3" and info.value.reason == "malformed_json"


def test_non_utf8_bytes_name_the_field_or_the_line(tmp_path):
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(b'{"prompt": "P", "completion": "caf\xe9"}\n{"prompt": \xff}\n')
    pairs = list(read_file(path))
    with pytest.raises(DataError) as info:
        parse_record(pairs[0][1], pairs[0][0])
    assert (info.value.location, info.value.field, info.value.reason) == (
        f"{path}:1",
        "completion",
        "non_utf8",
    )
    assert pairs[1][1].reason == "non_utf8" and pairs[1][0] == f"{path}:2"
    csv_path = tmp_path / "bytes.csv"
    csv_path.write_bytes(b"prompt,completion\nP,ok\nP,caf\xe9\n")
    with pytest.raises(DataError) as info:
        load(csv_path)
    assert (info.value.location, info.value.field) == (f"{csv_path}:3", "completion")


@pytest.mark.parametrize(
    "header, mapping, match",
    [
        ("instrucion,respons", None, "'instrucion' -> 'instruction'"),
        ("prompt,prompt", None, "twice"),
        ("prompt,,completion", None, "empty column"),
        ("headline,category", "prompt=headline,label=categry", "no column 'categry'"),
        ("instruction,category", None, "matches no known record shape"),
    ],
)
def test_wrong_csv_header_fails_before_any_row(tmp_path, header, mapping, match):
    path = tmp_path / "data.csv"
    path.write_text(f"{header}\nA,B,C\n")
    mapping = FieldMapping.parse(mapping) if mapping else None
    with pytest.raises(DataError, match=match) as info:
        load(path, mapping, skip_bad_records=True)
    assert info.value.location == f"{path}:1" and info.value.field == "header"


def test_csv_rows_with_the_wrong_number_of_values(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('prompt,completion\nP,C\nP,C,extra\n"P"\n')
    pairs = list(read_file(path))
    assert isinstance(pairs[0][1], dict)
    assert (pairs[1][0], pairs[1][1].reason) == (f"{path}:3", "bad_row")
    assert (pairs[2][0], pairs[2][1].field) == (f"{path}:4", "completion")
    examples, report = load(path, skip_bad_records=True)
    assert len(examples) == 1 and report.skipped == {"bad_row": 2}


@pytest.mark.parametrize(
    "name, match",
    [
        ("missing.jsonl", "does not exist"),
        ("data.txt", "unknown suffix"),
    ],
)
def test_unusable_paths(tmp_path, name, match):
    if name.endswith(".txt"):
        (tmp_path / name).write_text("x")
    with pytest.raises(DataError, match=match):
        list_data_files(tmp_path / name)
    with pytest.raises(DataError, match=match):
        read_file(tmp_path / name)


def test_empty_directory_and_truncated_gzip(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no data files"):
        list_data_files(tmp_path / "empty")
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"prompt": "P", "completion": "C"}\n' * 100)[:40])
    with pytest.raises(DataError, match="could not be read") as info:
        list(read_file(path))
    assert info.value.location == str(path)


def test_json_lines_in_a_json_file(tmp_path):
    # Kaggle's News Category file is JSON Lines despite its .json name.
    path = tmp_path / "News_Category_Dataset_v3.json"
    path.write_text('{"headline": "H1", "category": "A"}\n{"headline": "H2", "category": "B"}\n')
    assert [loc for loc, _ in read_file(path)] == [f"{path}:1", f"{path}:2"]
    (tmp_path / "two.json").write_text('{"prompt": "P"} {"prompt": "Q"}')
    with pytest.raises(DataError, match="extra data"):
        list(read_file(tmp_path / "two.json"))


# ------------------------------------------------- issue 13: long fields, NULs, UTF-16


def test_csv_fields_past_csvs_default_limit_read_like_jsonl(tmp_path):
    # Python's csv stops at 131,072 characters a field; the same records in
    # JSONL always trained, so CSV must read them too, and leave csv's
    # process-wide limit as it was, also while the reader is suspended.
    records = [
        {"prompt": "P1", "completion": "x" * 140_000},
        {"prompt": "y\n" * 100_000, "completion": "C2"},
    ]
    csv_path, jsonl_path = tmp_path / "long.csv", tmp_path / "long.jsonl"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["prompt", "completion"])
        writer.writeheader()
        writer.writerows(records)
    jsonl_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    limit = csv.field_size_limit()
    pairs = read_file(csv_path)
    assert next(pairs) == (f"{csv_path}:2", records[0])
    assert csv.field_size_limit() == limit
    assert [r for _, r in pairs] == records[1:]
    assert csv.field_size_limit() == limit
    from_csv, _ = load(csv_path)
    from_jsonl, _ = load(jsonl_path)
    assert [e.messages for e in from_csv] == [e.messages for e in from_jsonl]
    assert len(from_csv) == 2


def test_csv_field_over_the_bound_is_a_bad_record(tmp_path):
    from keras_ft.data.readers import CSV_FIELD_MAX_CHARS

    path = tmp_path / "huge.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "completion"])
        writer.writerow(["P1", "C1"])
        writer.writerow(["P2", "line\n" + "z" * CSV_FIELD_MAX_CHARS])
        writer.writerow(["P3", "C3"])
    with pytest.raises(DataError, match=f"at most {CSV_FIELD_MAX_CHARS:,}") as info:
        load(path)
    assert (info.value.location, info.value.field, info.value.reason) == (
        f"{path}:3",
        "completion",
        "field_too_long",
    )
    examples, report = load(path, skip_bad_records=True)
    assert [e.messages[0].content for e in examples] == ["P1", "P3"]
    assert report.skipped == {"field_too_long": 1}
    assert examples[1].source == f"{path}:5"  # the rows after it keep their lines


def test_csv_field_past_the_parser_limit_refuses_the_file(tmp_path, monkeypatch):
    # Past csv's own limit the parser cannot find the record's end (here an
    # unbalanced quote swallows the rest of the file): refused, not skipped.
    import keras_ft.data.readers as readers

    monkeypatch.setattr(readers, "CSV_FIELD_MAX_CHARS", 50)
    monkeypatch.setattr(readers, "CSV_PARSER_MAX_CHARS", 200)
    path = tmp_path / "quote.csv"
    path.write_text('prompt,completion\nP1,C1\nP2,"oops\n' + "P,C\n" * 100)
    with pytest.raises(DataError, match="unbalanced") as info:
        load(path, skip_bad_records=True)
    assert info.value.location == f"{path}:3" and "200" in str(info.value)
    path.write_text("prompt,completion\nP1," + "c" * 100 + "\nP2,C2\n")
    examples, report = load(path, skip_bad_records=True)
    assert len(examples) == 1 and report.skipped == {"field_too_long": 1}


@pytest.mark.parametrize("name", ["data.jsonl", "data.json", "data.csv", "data.csv.gz"])
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_files_get_an_encoding_hint_in_every_reader(tmp_path, name, encoding):
    record = {"prompt": "Caf\u00e9?", "completion": "Oui."}
    text = {"data.jsonl": json.dumps(record) + "\n", "data.json": json.dumps([record])}.get(
        name, "prompt,completion\nCaf\u00e9?,Oui.\n"
    )
    data = ("\ufeff" + text).encode(encoding)  # utf-16, utf-32: little-endian, BOM
    if encoding != "utf-16-be":
        data = text.encode(encoding)  # these codecs write the BOM themselves
    path = tmp_path / name
    compress = gzip.compress if name.endswith(".gz") else bytes
    path.write_bytes(compress(data))
    expected = "UTF-32" if encoding == "utf-32" else "UTF-16"
    with pytest.raises(DataError, match=f"looks like {expected}.*save it as UTF-8") as info:
        load(path, skip_bad_records=True)  # the whole file is unreadable: never a skip
    assert info.value.location == str(path) and info.value.reason == "bad_encoding"
    path.write_bytes(compress(text.encode("utf-8-sig")))  # as UTF-8 (with BOM) it reads
    examples, _ = load(path)
    assert examples[0].messages[0].content == "Caf\u00e9?"


@pytest.mark.parametrize(
    "name, content",
    [
        ("nul.csv", b"prompt,completion\nP,ok\nP\x00\x00x,ok\nQ,ok\n"),
        (
            "nul.jsonl",
            b'{"prompt": "P", "completion": "ok"}\n'
            b'{"prompt": "P\\u0000\\u0000x", "completion": "ok"}\n'
            b'{"prompt": "Q", "completion": "ok"}\n',
        ),
    ],
)
def test_nul_characters_are_refused_or_counted_never_trained(tmp_path, name, content):
    # A tokenizer reads NUL as <unk>: refused with file:line:field and the
    # count, or skipped and counted with --skip-bad-records.
    path = tmp_path / name
    path.write_bytes(content)
    line = 3 if name.endswith(".csv") else 2
    with pytest.raises(DataError, match=r"holds 2 NUL character\(s\)") as info:
        load(path)
    assert (info.value.location, info.value.field, info.value.reason) == (
        f"{path}:{line}",
        "prompt",
        "nul_byte",
    )
    examples, report = load(path, skip_bad_records=True)
    assert [e.messages[0].content for e in examples] == ["P", "Q"]
    assert report.skipped == {"nul_byte": 1} and "nul_byte" in report.summary()
