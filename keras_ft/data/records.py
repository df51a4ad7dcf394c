"""Raw records -> `Example`s, with errors that name file, line and field.

Record shapes, detected in this order: chat `messages` [{role, content}],
ShareGPT `conversations` [{from, value}], Dolly (`instruction`, `context` or
`input`, `response` or `output`), `prompt`/`completion`, and classification
(`label` plus `prompt`/`instruction`/`text`). A `FieldMapping` renames fields
first. Text must be valid UTF-8 without NUL characters (which tokenizers
read as `<unk>`); a field holding either is a bad record naming the field.
`iter_examples` either raises the first `DataError` or, with
`skip_bad_records`, counts each skip per reason in a `LoadReport`.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import reprlib
from typing import Any, Iterable, Iterator

from keras_ft.templates import Example, Message

TARGETS = (
    "instruction",
    "context",
    "response",
    "prompt",
    "completion",
    "system",
    "label",
    "text",
    "messages",
    "conversations",
)
SKIP_HINT = (
    "Fix the data, or pass --skip-bad-records to skip bad records (they are counted and reported)."
)
# Bytes that are not UTF-8 are decoded as lone surrogates, so the error can
# name the field that holds them instead of failing the whole line or file.
BAD_TEXT = re.compile("[\ud800-\udfff]")


class DataError(ValueError):
    """Bad input data; says where (file:line), which field, and why.

    Attributes:
        location: "file:line" (or just the file for file-level problems).
        field: the record field at fault, e.g. `messages[2].role`, or "".
        reason: a short category used to count skips, e.g. `missing_field`.
    """

    def __init__(
        self,
        message: str,
        *,
        location: str = "",
        field: str = "",
        reason: str = "invalid",
        received: Any = ...,
    ):
        self.location, self.field, self.reason = location, field, reason
        self.message = message
        self.received = received
        self.hint = ""
        super().__init__(message)

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        field = f"field `{self.field}` " if self.field else ""
        text = f"{where}{field}{self.message}"
        if self.received is not ...:
            text += f" Received: {_short(self.received)}"
        return f"{text} {self.hint}" if self.hint else text


_REPR = reprlib.Repr()  # bounded depth and length, whatever the input
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60


def _short(value: Any) -> str:
    return _REPR.repr(value)


@dataclasses.dataclass
class LoadReport:
    """What loading did with every record; `summary()` is shown at the end.

    Invariant: num_seen == num_kept + num_skipped + num_dropped_with_context
    + num_dropped_by_filter.
    """

    num_seen: int = 0  # records (and empty files) looked at
    num_kept: int = 0
    num_dropped_with_context: int = 0  # drop_with_context filter
    num_dropped_by_filter: int = 0  # keep_matching filter: the field did not match
    # Plain dicts, not Counters, so that dataclasses.asdict and JSON keep them.
    skipped: dict = dataclasses.field(default_factory=dict)  # reason -> count
    skip_samples: dict = dataclasses.field(default_factory=dict)  # reason -> messages
    shapes: dict = dataclasses.field(default_factory=dict)  # record shape -> kept
    labels: dict = dataclasses.field(default_factory=dict)  # class label -> kept
    sources: dict = dataclasses.field(default_factory=dict)  # data spec -> kept
    num_train: int = 0
    num_validation: int = 0
    num_overlap_removed: int = 0  # training examples equal to a validation one
    notes: list = dataclasses.field(default_factory=list)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def add_skip(self, error: DataError) -> None:
        _bump(self.skipped, error.reason)
        samples = self.skip_samples.setdefault(error.reason, [])
        if len(samples) < 3:
            samples.append(str(error))

    def summary(self) -> str:
        """A few lines for the log: counts, skips per reason with examples."""
        lines = [
            f"Read {self.num_seen} records: kept {self.num_kept}, skipped "
            f"{self.num_skipped}, dropped for context "
            f"{self.num_dropped_with_context}"
            + (
                f", dropped by keep_matching {self.num_dropped_by_filter}."
                if self.num_dropped_by_filter
                else "."
            )
        ]
        if self.num_train or self.num_validation:
            lines.append(
                f"Split: {self.num_train} training, {self.num_validation}"
                f" validation ({self.num_overlap_removed} training "
                "examples equal to a validation one removed)."
            )
        for reason, count in sorted(self.skipped.items(), key=lambda kv: -kv[1]):
            lines.append(
                f"  skipped {count} x {reason}, e.g. {self.skip_samples.get(reason, [''])[0]}"
            )
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "LoadReport":
        return cls(**values)


def _bump(counts: dict, key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


# ---------------------------------------------------------------- field mapping


@dataclasses.dataclass(frozen=True)
class FieldMapping:
    """Renames record fields: `instruction=headline,response=category`.

    A target may join several source fields with `+` (joined by a newline):
    `prompt=headline+short_description`. `context=` (no field) ignores a field
    the records happen to have. `label=FIELD` frames the data as
    classification: the response is the label and the label set is recorded.
    """

    pairs: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def parse(cls, text: str) -> "FieldMapping":
        """Parses the `fields` config string; raises ValueError naming it."""
        pairs = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            target, sep, sources = (s.strip() for s in part.partition("="))
            names = tuple(s.strip() for s in sources.split("+")) if sources else ()
            if not sep or not target or not all(names):
                raise ValueError(
                    "`fields` must look like `instruction=headline,response=category`"
                    f" (TARGET=FIELD[+FIELD], comma separated). Received: fields={text!r}"
                )
            if target not in TARGETS:
                close = difflib.get_close_matches(target, TARGETS, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(
                    f"`fields` names an unknown target {target!r}; "
                    f"targets are {list(TARGETS)}.{hint} Received: fields={text!r}"
                )
            pairs.append((target, names))
        return cls(tuple(pairs))

    def sources(self) -> set[str]:
        return {name for _, names in self.pairs for name in names}

    def apply(self, record: dict, location: str) -> dict:
        """Returns a copy of `record` with the mapped target fields set."""
        if not self.pairs:
            return record
        out = dict(record)
        for target, names in self.pairs:
            if not names:  # `context=`: ignore a field the record happens to have
                out[target] = None
            elif len(names) == 1:
                out[target] = _get(record, names[0], location)
            else:
                parts = [_text(record, name, location, allow_empty=True) for name in names]
                out[target] = "\n".join(p for p in parts if p.strip())
        return out


@dataclasses.dataclass(frozen=True)
class RecordFilter:
    """Keeps the records whose raw FIELD matches a regex: `response=(?m)^1\\. `.

    Like `datasets.Dataset.filter` in a config string: the Bitext
    step-by-step recipe keeps only the answers that hold a numbered list.
    The regex is searched (`re.search`) in the field's text as the file has
    it, before `fields` renames anything; a record without the field is a
    bad record (an error naming file:line and field, or a counted skip), and
    a record that does not match is dropped and counted, never silently.
    """

    field: str
    pattern: re.Pattern

    @classmethod
    def parse(cls, text: str) -> "RecordFilter":
        """Parses the `keep_matching` config string; raises ValueError naming it."""
        field, sep, regex = text.partition("=")
        if not sep or not field.strip() or not regex:
            raise ValueError(
                "`keep_matching` must look like `FIELD=REGEX`, e.g. "
                f"`response=(?m)^1\\. `. Received: keep_matching={text!r}"
            )
        try:
            pattern = re.compile(regex)
        except re.error as error:
            raise ValueError(
                f"`keep_matching` holds an invalid regular expression {regex!r}: "
                f"{error}. Received: keep_matching={text!r}"
            ) from None
        return cls(field.strip(), pattern)

    def keeps(self, record: Any, location: str) -> bool:
        """Whether `record` matches; raises DataError if the field is not text."""
        if not isinstance(record, dict):
            return True  # parse_record reports the record itself
        return bool(self.pattern.search(_text(record, self.field, location, allow_empty=True)))


# -------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True)
class ParsedRecord:
    example: Example
    shape: str  # dolly | prompt_completion | messages | sharegpt | classification
    has_context: bool = False  # a Dolly record with a non-empty context


def parse_record(record: Any, location: str, mapping: FieldMapping | None = None) -> ParsedRecord:
    """Normalises one raw record into an `Example`.

    Args:
        record: the decoded JSON object / CSV row / Parquet row.
        location: "file:line", used as `Example.source` and in errors.
        mapping: optional field renames applied before shape detection.

    Returns:
        The example, its detected shape, and whether it carries a context.

    Raises:
        DataError: naming location, field and reason, for any bad record.
    """
    if not isinstance(record, dict):
        raise DataError(
            "A record must be a JSON object with named fields.",
            location=location,
            reason="not_a_record",
            received=record,
        )
    if mapping is not None:
        record = mapping.apply(record, location)
    shape = detect_shape(record.keys())
    if shape is None:
        raise _unknown_shape(record.keys(), location)
    system = _system(record, location)
    has_context = False
    if shape == "messages":
        messages = _chat(record, "messages", "role", "content", _MESSAGE_ROLES, location)
    elif shape == "sharegpt":
        messages = _chat(record, "conversations", "from", "value", _SHAREGPT_ROLES, location)
    elif shape == "classification":
        return _classification(record, location, system)
    else:
        user, reply, has_context = _single_turn(record, shape, location)
        messages = (Message("user", user), Message("assistant", reply))
    if system:
        if messages[0].role == "system":
            raise DataError(
                "is set, but the conversation already starts with a "
                "system message; keep one of them.",
                location=location,
                field="system",
                reason="bad_conversation",
            )
        messages = (Message("system", system),) + messages
    return ParsedRecord(Example(messages, source=location), shape, has_context)


def detect_shape(fields: Iterable[str], strict: bool = False) -> str | None:
    """The record shape that a set of field names stands for, or None.

    Not strict, a half-present shape (`instruction` without a response) is
    still detected, so the error can name the missing field.
    """
    fields = set(fields)
    if "messages" in fields:
        return "messages"
    if "conversations" in fields:
        return "sharegpt"
    if "instruction" in fields and fields & {"response", "output"}:
        return "dolly"
    if "prompt" in fields and "completion" in fields:
        return "prompt_completion"
    if "label" in fields and fields & {"prompt", "instruction", "text"}:
        return "classification"
    if strict:
        return None
    if "instruction" in fields:
        return "dolly"
    if "prompt" in fields:
        return "prompt_completion"
    return None


def check_columns(columns: Iterable[str], mapping: FieldMapping | None, location: str) -> None:
    """Checks a CSV/Parquet header before any row: names, mapping, shape.

    Raises:
        DataError: naming the header line and the offending column.
    """
    columns = list(columns)
    seen = set()
    for name in columns:
        if not name or not name.strip():
            raise DataError(
                "has an empty column name.",
                location=location,
                field="header",
                reason="bad_header",
                received=columns,
            )
        if name in seen:
            raise DataError(
                f"names column {name!r} twice.",
                location=location,
                field="header",
                reason="bad_header",
                received=columns,
            )
        seen.add(name)
    available = set(columns)
    if mapping is not None:
        missing = sorted(mapping.sources() - available)
        if missing:
            raise DataError(
                f"has no column {missing[0]!r}, which `fields` maps. Columns: {columns}.",
                location=location,
                field="header",
                reason="bad_header",
            )
        available |= {target for target, _ in mapping.pairs}
    if detect_shape(available, strict=True) is None:
        raise _unknown_shape(columns, location, field="header", reason="bad_header")


def _field_names(fields, limit: int = 20) -> str:
    """The fields a record holds, bounded: junk input can hold thousands."""
    names = sorted(str(f) for f in fields)
    shown = ", ".join(_short(n) for n in names[:limit])
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return f"[{shown}{more}]"


def _unknown_shape(fields, location, field="", reason="unknown_shape") -> DataError:
    present = _field_names(fields)
    fields = sorted(str(f) for f in fields)
    known = (
        "instruction",
        "context",
        "input",
        "response",
        "output",
        "prompt",
        "completion",
        "messages",
        "conversations",
        "label",
        "text",
    )
    typos = [
        f"{f!r} -> {difflib.get_close_matches(f, known, n=1)[0]!r}"
        for f in fields
        if f not in known and difflib.get_close_matches(f, known, n=1)
    ]
    hint = f" Possible typos: {', '.join(typos[:5])}." if typos else ""
    return DataError(
        f"{'' if field else 'The record '}matches no known record shape: need "
        "`messages`, `conversations`, "
        "`instruction`+`response`/`output`, `prompt`+`completion`, or "
        f"`label`+`text`. Fields present: {present}.{hint} Map other fields with "
        "--fields, e.g. --fields instruction=headline,response=category.",
        location=location,
        field=field,
        reason=reason,
    )


def _get(record: dict, key: str, location: str, field: str = "") -> Any:
    if record.get(key) is None:
        present = "" if field else f" Fields present: {_field_names(record)}."
        raise DataError(
            f"is missing.{present}", location=location, field=field or key, reason="missing_field"
        )
    return record[key]


def _wrong_type(message: str, location: str, field: str, received) -> DataError:
    """The DataError of a value of the wrong JSON type."""
    return DataError(
        message, location=location, field=field, reason="wrong_type", received=received
    )


def _text(
    record: dict, key: str, location: str, *, allow_empty: bool = False, field: str = ""
) -> str:
    """record[key] as a non-empty, valid string; errors name `field` or `key`."""
    value, field = _get(record, key, location, field), field or key
    if not isinstance(value, str):
        raise _wrong_type(f"must be a string, not {type(value).__name__}.", location, field, value)
    if BAD_TEXT.search(value):
        raise DataError(
            "holds bytes that are not valid UTF-8 (or lone surrogate "
            "escapes). Re-encode the file as UTF-8.",
            location=location,
            field=field,
            reason="non_utf8",
            received=value,
        )
    if "\x00" in value:
        raise DataError(
            f"holds {value.count(chr(0))} NUL character(s) (\\x00), which "
            "the tokenizer would train as <unk>. Remove them (a file "
            "saved as UTF-16 without a byte-order mark also looks like "
            "this; save it as UTF-8).",
            location=location,
            field=field,
            reason="nul_byte",
            received=value,
        )
    if not allow_empty and not value.strip():
        raise DataError(
            "is empty.", location=location, field=field, reason="empty_string", received=value
        )
    return value


def _system(record: dict, location: str) -> str:
    if record.get("system") is None:
        return ""
    system = _text(record, "system", location, allow_empty=True)
    return system if system.strip() else ""  # a blank system prompt is no prompt


def _single_turn(record: dict, shape: str, location: str) -> tuple[str, str, bool]:
    if shape == "prompt_completion":
        return (_text(record, "prompt", location), _text(record, "completion", location), False)
    instruction = _text(record, "instruction", location)
    context_key = "context" if "context" in record else "input"
    context = ""
    if record.get(context_key) is not None:
        context = _text(record, context_key, location, allow_empty=True)
    reply_key = "output" if "output" in record and "response" not in record else "response"
    reply = _text(record, reply_key, location)
    if context.strip():
        return f"{instruction}\n\nContext:\n{context}", reply, True
    return instruction, reply, False


def _classification(record: dict, location: str, system: str) -> ParsedRecord:
    label = _get(record, "label", location)
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise _wrong_type("must be a string or an integer class.", location, "label", label)
    label = _text({"label": str(label)}, "label", location)
    keys = [k for k in ("prompt", "instruction", "text") if record.get(k) is not None]
    prompt = _text(record, keys[0] if keys else "text", location)
    messages = (Message("user", prompt), Message("assistant", label))
    if system:
        messages = (Message("system", system),) + messages
    return ParsedRecord(Example(messages, source=location, label=label), "classification")


_MESSAGE_ROLES = {
    "system": "system",
    "user": "user",
    "assistant": "assistant",
    "model": "assistant",
}
_SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
}


def _chat(
    record: dict, key: str, role_key: str, content_key: str, roles: dict[str, str], location: str
) -> tuple[Message, ...]:
    items = _get(record, key, location)
    if not isinstance(items, list):
        raise _wrong_type(
            f"must be a list of {{{role_key}, {content_key}}} objects, not {type(items).__name__}.",
            location,
            key,
            items,
        )
    if not items:
        raise DataError("is an empty list.", location=location, field=key, reason="empty_string")
    messages = []
    for i, item in enumerate(items):
        name = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise _wrong_type(
                f"must be an object with `{role_key}` and `{content_key}`.", location, name, item
            )
        role = _text(item, role_key, location, field=f"{name}.{role_key}")
        if role not in roles:
            raise DataError(
                f"is not a known role; use one of {sorted(roles)}.",
                location=location,
                field=f"{name}.{role_key}",
                reason="bad_conversation",
                received=role,
            )
        content = _content(item, content_key, location, f"{name}.{content_key}")
        messages.append(Message(roles[role], content))
    _check_turns(messages, key, location)
    return tuple(messages)


def _content(item: dict, key: str, location: str, field: str) -> str:
    value = item.get(key)
    if isinstance(value, list):  # OpenAI-style [{"type": "text", "text": ...}]
        parts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise _wrong_type(
                    "may only hold text parts ({type: text, text}).",
                    location,
                    f"{field}[{j}]",
                    part,
                )
            parts.append(
                _text(part, "text", location, allow_empty=True, field=f"{field}[{j}].text")
            )
        value = "".join(parts)
    return _text({key: value}, key, location, field=field)


def _check_turns(messages: list[Message], key: str, location: str) -> None:
    start = 1 if messages[0].role == "system" else 0
    expected = "user"
    for i in range(start, len(messages)):
        role = messages[i].role
        if role != expected:
            problem = (
                "a system message may only come first"
                if role == "system"
                else f"turns must alternate user/assistant, starting with user; "
                f"expected {expected!r} here"
            )
            raise DataError(
                f"{problem}.",
                location=location,
                field=f"{key}[{i}]",
                reason="bad_conversation",
                received=role,
            )
        expected = "assistant" if role == "user" else "user"
    if len(messages) == start:
        raise DataError(
            "holds only a system message; add user and assistant turns.",
            location=location,
            field=key,
            reason="bad_conversation",
        )
    if messages[-1].role != "assistant":
        raise DataError(
            "ends on a user turn; the last message must be the "
            "assistant's reply (nothing to train on otherwise).",
            location=location,
            field=f"{key}[{len(messages) - 1}]",
            reason="bad_conversation",
        )


# ------------------------------------------------------------------ consumer


def iter_examples(
    records: Iterable[tuple[str, Any]],
    report: LoadReport,
    *,
    mapping: FieldMapping | None = None,
    skip_bad_records: bool = False,
    drop_with_context: bool = False,
    keep: RecordFilter | None = None,
    source: str = "",
) -> Iterator[Example]:
    """Turns (location, record) pairs into Examples, counting into `report`.

    Args:
        records: from `read_file` (or any source); DataError items are bad records.
        report: updated in place (seen, kept, skipped per reason, shapes, labels).
        mapping: field renames.
        skip_bad_records: count and skip bad records instead of raising.
        drop_with_context: drop Dolly records with a non-empty context.
        keep: drop (and count) the records this filter does not keep.
        source: the data spec, for per-source counts.

    Yields:
        One Example per good record, lazily (so callers can stop early).

    Raises:
        DataError: on the first bad record, unless `skip_bad_records`.
    """
    for location, record in records:
        report.num_seen += 1
        try:
            if isinstance(record, DataError):
                raise record
            if keep is not None and not keep.keeps(record, location):
                report.num_dropped_by_filter += 1
                continue
            parsed = parse_record(record, location, mapping)
        except DataError as error:
            if not skip_bad_records:
                error.hint = SKIP_HINT
                raise
            report.add_skip(error)
            continue
        if drop_with_context and parsed.has_context:
            report.num_dropped_with_context += 1
            continue
        report.num_kept += 1
        _bump(report.shapes, parsed.shape)
        _bump(report.sources, source)
        if parsed.example.label is not None:
            _bump(report.labels, parsed.example.label)
        yield parsed.example
