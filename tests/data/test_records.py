"""Record shapes -> Examples, and bad records -> errors naming line and field."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_ft.data.readers import read_file
from keras_ft.data.records import DataError, FieldMapping, LoadReport, iter_examples, parse_record
from keras_ft.templates import Message

LOC = "f.jsonl:7"


def messages(record, mapping=None):
    return parse_record(record, LOC, mapping).example.messages


def test_dolly_both_spellings_give_the_same_example():
    original = {
        "instruction": "Sum 2+2.",
        "context": "Math.",
        "response": "4",
        "category": "closed_qa",
    }
    minillm = {
        "instruction": "Sum 2+2.",
        "input": "Math.",
        "output": "4",
        "prompt": "Below is an instruction...",
    }
    expected = (Message("user", "Sum 2+2.\n\nContext:\nMath."), Message("assistant", "4"))
    assert messages(original) == messages(minillm) == expected
    assert parse_record(minillm, LOC).has_context


def test_dolly_without_context_is_just_the_instruction():
    parsed = parse_record({"instruction": "Hi?", "input": "", "output": "Hello."}, LOC)
    assert parsed.example.messages[0] == Message("user", "Hi?")
    assert not parsed.has_context and parsed.shape == "dolly"
    assert parsed.example.source == LOC


def test_prompt_completion_and_system():
    record = {"prompt": "How do I X?", "completion": "1. Y", "system": "Be brief."}
    assert messages(record) == (
        Message("system", "Be brief."),
        Message("user", "How do I X?"),
        Message("assistant", "1. Y"),
    )


def test_multi_turn_messages_with_system():
    chat = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "U2"},
        {"role": "assistant", "content": [{"type": "text", "text": "A2"}]},
    ]
    assert [m.role for m in messages({"messages": chat})] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert messages({"messages": chat})[-1].content == "A2"


def test_sharegpt_conversations():
    conv = [
        {"from": "system", "value": "S"},
        {"from": "human", "value": "Q"},
        {"from": "gpt", "value": "A"},
    ]
    assert messages({"conversations": conv, "id": "x"}) == (
        Message("system", "S"),
        Message("user", "Q"),
        Message("assistant", "A"),
    )


def test_field_mapping_and_classification():
    mapping = FieldMapping.parse("prompt=headline+short_description, label=category")
    record = {"headline": "H", "short_description": "D", "category": "SPORTS", "link": "l"}
    parsed = parse_record(record, LOC, mapping)
    assert parsed.shape == "classification"
    assert parsed.example.label == "SPORTS"
    assert parsed.example.messages == (Message("user", "H\nD"), Message("assistant", "SPORTS"))
    renamed = FieldMapping.parse("instruction=headline,response=category")
    assert messages(record, renamed) == (Message("user", "H"), Message("assistant", "SPORTS"))


def test_mapping_can_ignore_a_context_column():
    record = {"instruction": "Q", "context": "customer support", "response": "A"}
    assert messages(record, FieldMapping.parse("context="))[0].content == "Q"


@pytest.mark.parametrize(
    "text, match",
    [
        ("instruction", "TARGET=FIELD"),
        ("instrucion=x", "Did you mean 'instruction'"),
        ("prompt=a+", "TARGET=FIELD"),
    ],
)
def test_bad_field_mapping_names_the_config_field(text, match):
    with pytest.raises(ValueError, match=match) as info:
        FieldMapping.parse(text)
    assert "fields" in str(info.value)


@pytest.mark.parametrize(
    "record, field, reason",
    [
        ({"instruction": "Q"}, "response", "missing_field"),
        ({"instruction": "Q", "response": None}, "response", "missing_field"),
        ({"instruction": 3, "response": "A"}, "instruction", "wrong_type"),
        ({"instruction": "Q", "output": "  "}, "output", "empty_string"),
        ({"instruction": "Q", "input": ["c"], "output": "A"}, "input", "wrong_type"),
        ({"prompt": "P"}, "completion", "missing_field"),
        ({"prompt": "P", "completion": "bad \udc80 byte"}, "completion", "non_utf8"),
        ({"prompt": "P\x00", "completion": "C"}, "prompt", "nul_byte"),
        (
            {
                "messages": [
                    {"role": "user", "content": "Q"},
                    {"role": "assistant", "content": [{"type": "text", "text": "A\x00"}]},
                ]
            },
            "messages[1].content[0].text",
            "nul_byte",
        ),
        ({"messages": "hi"}, "messages", "wrong_type"),
        ({"messages": []}, "messages", "empty_string"),
        ({"messages": [{"role": "user", "content": "Q"}]}, "messages[0]", "bad_conversation"),
        (
            {
                "messages": [
                    {"role": "user", "content": "Q"},
                    {"role": "user", "content": "Q"},
                    {"role": "assistant", "content": "A"},
                ]
            },
            "messages[1]",
            "bad_conversation",
        ),
        ({"messages": [{"role": "assistant", "content": "A"}]}, "messages[0]", "bad_conversation"),
        ({"messages": [{"role": "bot", "content": "A"}]}, "messages[0].role", "bad_conversation"),
        ({"messages": [{"role": "user"}]}, "messages[0].content", "missing_field"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "wrong_type"),
        ({"messages": [{"role": "system", "content": "S"}]}, "messages", "bad_conversation"),
        (
            {
                "messages": [
                    {"role": "user", "content": "Q"},
                    {"role": "assistant", "content": "A"},
                    {"role": "system", "content": "S"},
                ]
            },
            "messages[2]",
            "bad_conversation",
        ),
        (
            {"conversations": [{"from": "gpt", "value": "A"}]},
            "conversations[0]",
            "bad_conversation",
        ),
        (
            {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": ""}]},
            "conversations[1].value",
            "empty_string",
        ),
        ({"conversations": ["Q"]}, "conversations[0]", "wrong_type"),
        ({"label": 1.5, "text": "T"}, "label", "wrong_type"),
        ({"label": "x", "text": ""}, "text", "empty_string"),
        ({"system": 4, "prompt": "P", "completion": "C"}, "system", "wrong_type"),
    ],
)
def test_bad_records_name_location_field_and_reason(record, field, reason):
    with pytest.raises(DataError) as info:
        parse_record(record, LOC)
    error = info.value
    assert (error.location, error.field, error.reason) == (LOC, field, reason)
    assert str(error).startswith(f"{LOC}: field `{field}` ")


@pytest.mark.parametrize(
    "record, match",
    [
        ([1, 2], "JSON object"),
        ({"instrucion": "Q", "respons": "A"}, "'instrucion' -> 'instruction'"),
        ({"headline": "H"}, "--fields"),
    ],
)
def test_unknown_shapes_say_what_would_work(record, match):
    with pytest.raises(DataError, match=match) as info:
        parse_record(record, LOC)
    assert str(info.value).startswith(LOC)


def test_skips_are_counted_per_reason_and_summarised(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"prompt": "P", "completion": "C"}),
                "{not json",
                json.dumps({"prompt": "P"}),
                "",
                json.dumps({"prompt": "P", "completion": ""}),
                json.dumps({"instruction": "I", "input": "ctx", "output": "O"}),
            ]
        )
    )
    report = LoadReport()
    examples = list(
        iter_examples(read_file(path), report, skip_bad_records=True, drop_with_context=True)
    )
    assert len(examples) == 1
    assert report.skipped == {"malformed_json": 1, "missing_field": 1, "empty_string": 1}
    assert report.num_dropped_with_context == 1
    assert (
        report.num_seen
        == 5
        == (report.num_kept + report.num_skipped + report.num_dropped_with_context)
    )
    summary = report.summary()
    assert "skipped 3" in summary and f"{path}:2" in summary
    assert LoadReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


def test_strict_mode_raises_the_first_bad_record_with_a_hint(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "P", "completion": "C"}\n{"prompt": "P", "completion": 1}\n')
    with pytest.raises(DataError, match="--skip-bad-records") as info:
        list(iter_examples(read_file(path), LoadReport()))
    assert info.value.location == f"{path}:2" and info.value.field == "completion"


# ------------------------------------------------------------ property test

KEYS = [
    "instruction",
    "input",
    "context",
    "response",
    "output",
    "prompt",
    "completion",
    "messages",
    "conversations",
    "label",
    "text",
    "system",
    "role",
    "content",
    "from",
    "value",
    "extra",
]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["", " ", "user", "assistant", "gpt"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=8,
)
TURN = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system", "x"]) | VALUES,
        "content": st.text(max_size=8) | VALUES,
    }
)
SHAREGPT_TURN = st.fixed_dictionaries(
    {
        "from": st.sampled_from(["human", "gpt", "system"]) | VALUES,
        "value": st.text(max_size=8) | VALUES,
    }
)
RECORDS = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=5),
    st.fixed_dictionaries(
        {"instruction": VALUES, "output": VALUES}, optional={"input": VALUES, "context": VALUES}
    ),
    st.fixed_dictionaries({"prompt": st.text(max_size=8), "completion": VALUES}),
    st.fixed_dictionaries({"messages": st.lists(TURN, max_size=5)}),
    st.fixed_dictionaries({"conversations": st.lists(SHAREGPT_TURN, max_size=5)}),
    VALUES,
)


def _encode(record) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode()


LINES = st.one_of(
    RECORDS.map(_encode),
    RECORDS.map(_encode).flatmap(
        lambda b: st.integers(1, max(1, len(b) - 1)).map(lambda n: b[:n])
    ),  # truncated JSON
    st.builds(
        lambda t: _encode({"prompt": "P", "completion": t}).replace(b"<BAD>", b"\xff\xfe"),
        st.just("a <BAD> b"),
    ),  # invalid UTF-8 inside a string
    st.binary(min_size=1, max_size=30),
).filter(lambda line: b"\n" not in line and line.strip(b" \t\r"))

FIELD_REASONS = {"missing_field", "wrong_type", "empty_string", "bad_conversation"}


# 60 examples x at least 20 lines: at least 1,200 generated records per run.
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(lines=st.lists(LINES, min_size=20, max_size=40))
def test_malformed_records_error_or_skip_never_lose_data(tmp_path, lines):
    path = tmp_path / "generated.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    if lines[0].startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
        # A UTF-16/32 byte-order mark first: the whole file is refused, with a hint.
        with pytest.raises(DataError, match="save it as UTF-8") as info:
            list(iter_examples(read_file(path), LoadReport(), skip_bad_records=True))
        assert info.value.location == str(path)
        return
    # Strict: each record parses, or its DataError names file:line (+field).
    for number, (location, record) in enumerate(read_file(path), 1):
        assert location == f"{path}:{number}"
        try:
            if isinstance(record, DataError):
                raise record
            parse_record(record, location)
        except DataError as error:
            assert str(error).startswith(f"{path}:{number}: ")
            if error.reason in FIELD_REASONS:
                assert error.field and f"field `{error.field}`" in str(error)
    # Skipping: every record is kept or counted, none vanishes.
    report = LoadReport()
    kept = list(iter_examples(read_file(path), report, skip_bad_records=True))
    assert report.num_kept == len(kept)
    assert report.num_kept + report.num_skipped == len(lines) == report.num_seen


def test_a_junk_record_lists_its_fields_boundedly():
    from keras_ft.data.records import parse_record

    junk = {f"\x00\x01junk{i}" + "x" * 200: "v" for i in range(500)}
    with pytest.raises(DataError) as info:
        parse_record(junk, "junk.jsonl:1")
    message = str(info.value)
    assert "(480 more)" in message and "junk.jsonl:1" in message
    assert len(message) < 2000, len(message)
