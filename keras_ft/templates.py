"""Prompt templates: conversations -> segments that know if they carry loss.

Every record (Dolly, prompt/completion, chat, ShareGPT) is normalised by the
data loader into an `Example`: a tuple of `Message`s. A template renders the
messages turn by turn into `Segment`s. Each segment says whether its tokens
bear loss, so the loss mask comes from token positions, never from searching
the rendered text for marker strings.
"""

from __future__ import annotations

import dataclasses
import string
from typing import Callable, Sequence

ROLES = ("system", "user", "assistant")


@dataclasses.dataclass(frozen=True)
class Message:
    role: str  # one of ROLES
    content: str


@dataclasses.dataclass(frozen=True)
class Example:
    """One training example: a conversation, and where it came from."""

    messages: tuple[Message, ...]
    source: str = ""  # "file:line", for messages about this example
    label: str | None = None  # the class, for classification framed as text


@dataclasses.dataclass(frozen=True)
class Segment:
    """A piece of rendered text; `special` pieces are single token names."""

    text: str
    trainable: bool = False
    special: bool = False


@dataclasses.dataclass(frozen=True)
class Template:
    """How conversations become text.

    Attributes:
        name: registry name, or "custom" for a user format string.
        render_turn: (prompt messages of a turn, reply or None) -> segments.
            The reply is None when rendering a prompt for generation. A
            `JoinedTurn` or `HeaderTurn` also has a Jinja form
            (`chat_template`).
        begin: special token names put once before the first turn.
        stop_tokens: special token names that end a generated reply.
        turn_separator: text between consecutive turns (never trained).
    """

    name: str
    render_turn: Callable[[Sequence[Message], str | None], list[Segment]]
    begin: tuple[str, ...] = ()
    stop_tokens: tuple[str, ...] = ()
    turn_separator: str = ""

    def render(self, messages: Sequence[Message]) -> list[Segment]:
        """Renders a whole conversation; every assistant reply is trainable."""
        segments = [Segment(tok, special=True) for tok in self.begin]
        for i, (prompt, reply) in enumerate(split_turns(messages)):
            if i and self.turn_separator:
                segments.append(Segment(self.turn_separator))
            segments += self.render_turn(prompt, reply)
        return segments

    def render_prompt(self, messages: Sequence[Message]) -> list[Segment]:
        """Renders a conversation that ends on a user turn, ready to generate."""
        if not messages or messages[-1].role == "assistant":
            raise ValueError("A generation prompt must end with a user message.")
        turns = split_turns(messages)
        segments = self.render(_flatten(turns[:-1]))
        if len(turns) > 1 and self.turn_separator:
            segments.append(Segment(self.turn_separator))
        return segments + self.render_turn(turns[-1][0], None)

    def chat_template(self) -> str:
        """This template as Jinja source, for `tokenizer.chat_template`.

        Rendered the way Hugging Face's `apply_chat_template` and llama.cpp
        render chat templates (variables `messages`, `bos_token`,
        `eos_token`), it gives the text of `render(messages)`, specials
        written as their token names; a conversation that ends on a user turn
        gives the text of `render_prompt(messages)`. keras_ft has no rendering
        of a user turn without the reply header after it, so that header is
        written whatever `add_generation_prompt` says.

        Raises:
            ValueError: for a `Template` whose `render_turn` is a plain
                function (it has no Jinja form).
        """
        turn = self.render_turn
        if not hasattr(turn, "jinja_head"):
            raise ValueError(
                f"Template {self.name!r} has no Jinja form: its `render_turn` is not a "
                "`JoinedTurn` or `HeaderTurn`. Pass a chat template explicitly."
            )
        lines = [
            _jinja_output([_jinja_piece(Segment(t, special=True)) for t in self.begin]),
            "{%- set ns = namespace(prompt=none, turns=0) -%}",
            "{%- for message in messages -%}",
        ]
        if self.turn_separator:
            lines.append(
                "{%- if ns.prompt is none and ns.turns > 0 -%}"
                + _jinja_output([_jinja_string(self.turn_separator)])
                + "{%- endif -%}"
            )
        lines += [
            "{%- if message['role'] == 'assistant' -%}",
            turn.jinja_head() + "{{- message['content'] -}}" + turn.jinja_end(),
            "{%- set ns.prompt = none -%}{%- set ns.turns = ns.turns + 1 -%}",
            "{%- else -%}",
            turn.jinja_prompt_message(),
            "{%- endif -%}",
            "{%- endfor -%}",
            "{%- if ns.prompt is not none -%}" + turn.jinja_head() + "{%- endif -%}",
        ]
        return "\n".join(lines)


def split_turns(messages: Sequence[Message]) -> list[tuple[list[Message], str | None]]:
    """Groups messages into (system/user messages, assistant reply) turns."""
    turns: list[tuple[list[Message], str | None]] = []
    pending: list[Message] = []
    for message in messages:
        if message.role == "assistant":
            turns.append((pending, message.content))
            pending = []
        else:
            pending.append(message)
    if pending:
        turns.append((pending, None))
    return turns


def _flatten(turns):
    out = []
    for prompt, reply in turns:
        out += prompt
        if reply is not None:
            out.append(Message("assistant", reply))
    return out


def _user_text(prompt: Sequence[Message]) -> str:
    """System and user messages of one turn joined, for single-role formats."""
    return PROMPT_JOIN.join(m.content for m in prompt)


PROMPT_JOIN = "\n\n"  # between the system/user messages of one turn


def _coalesce(segments: Sequence[Segment]) -> list[Segment]:
    """Merges neighbouring plain-text segments of equal loss; drops empty ones."""
    out: list[Segment] = []
    for s in segments:
        if not s.text and not s.special:
            continue
        if out and not s.special and not out[-1].special and out[-1].trainable == s.trainable:
            out[-1] = Segment(out[-1].text + s.text, s.trainable)
        else:
            out.append(s)
    return out


# ------------------------------------------------------------------ Jinja
#
# Each turn format below renders twice from one description: to `Segment`s
# (training, generation) and to Jinja source (`Template.chat_template`, the
# `tokenizer.chat_template` of an exported GGUF). The Jinja keeps keras_ft's
# turn grouping (`split_turns`): consecutive system/user messages form one
# turn's prompt, each assistant message closes a turn.


def _jinja_string(text: str) -> str:
    """A Jinja (and Python) string literal of `text`."""
    escaped = (
        text.replace("\\", "\\\\")
        .replace("'", "\\'")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f"'{escaped}'"


def _jinja_piece(segment: Segment) -> str:
    """A Jinja expression for one fixed segment (`<bos>`/`<eos>`: the vocab's own)."""
    generic = {"<bos>": "bos_token", "<eos>": "eos_token"}
    if segment.special and segment.text in generic:
        return generic[segment.text]
    return _jinja_string(segment.text)


def _jinja_output(pieces: Sequence[str]) -> str:
    return "".join(f"{{{{- {p} -}}}}" for p in pieces)


@dataclasses.dataclass(frozen=True)
class JoinedTurn:
    """A turn whose system and user messages are one text spliced into `head`.

    Attributes:
        head: the prompt part; `None` marks where the joined messages go.
        end: after the reply, bearing loss (the end-of-turn token).
        tail: after `end`, bearing none (e.g. Gemma's newline).
    """

    head: tuple[Segment | None, ...]
    end: tuple[Segment, ...]
    tail: tuple[Segment, ...] = ()

    def __call__(self, prompt: Sequence[Message], reply: str | None) -> list[Segment]:
        text = _user_text(prompt)
        head = [Segment(text) if s is None else s for s in self.head]
        if reply is None:
            return _coalesce(head)
        return _coalesce(head + [Segment(reply, trainable=True), *self.end, *self.tail])

    def jinja_prompt_message(self) -> str:
        return (
            "{%- set ns.prompt = message['content'] if ns.prompt is none else ns.prompt + "
            f"{_jinja_string(PROMPT_JOIN)} + message['content'] -%}}"
        )

    def jinja_head(self) -> str:
        return _jinja_output(
            [
                "(ns.prompt if ns.prompt is not none else '')" if s is None else _jinja_piece(s)
                for s in self.head
            ]
        )

    def jinja_end(self) -> str:
        return _jinja_output([_jinja_piece(s) for s in self.end + self.tail])


@dataclasses.dataclass(frozen=True)
class HeaderTurn:
    """A turn where every message has its own role header (Llama 3).

    Attributes:
        header: before each message; `None` marks where the role goes.
        end: after each message (after a reply, it bears loss).
    """

    header: tuple[Segment | None, ...]
    end: Segment

    def _header(self, role: str) -> list[Segment]:
        return [Segment(role) if s is None else s for s in self.header]

    def __call__(self, prompt: Sequence[Message], reply: str | None) -> list[Segment]:
        segments = []
        for message in prompt:
            segments += self._header(message.role) + [Segment(message.content), self.end]
        segments += self._header("assistant")
        if reply is not None:
            segments += [
                Segment(reply, trainable=True),
                dataclasses.replace(self.end, trainable=True),
            ]
        return _coalesce(segments)

    def _jinja_header(self, role: str) -> list[str]:
        return [role if s is None else _jinja_piece(s) for s in self.header]

    def jinja_prompt_message(self) -> str:
        return (
            _jinja_output(
                self._jinja_header("message['role']")
                + ["message['content']", _jinja_piece(self.end)]
            )
            + "{%- set ns.prompt = '' -%}"
        )

    def jinja_head(self) -> str:
        return _jinja_output(self._jinja_header("'assistant'"))

    def jinja_end(self) -> str:
        return _jinja_output([_jinja_piece(self.end)])


TEMPLATES: dict[str, Template] = {
    # The keras-hub Gemma LoRA guide's format; the end token teaches stopping.
    "instruction": Template(
        "instruction",
        JoinedTurn(
            (Segment("Instruction:\n"), None, Segment("\n\nResponse:\n")),
            end=(Segment("<eos>", True, True),),
        ),
        begin=("<bos>",),
        stop_tokens=("<eos>",),
        turn_separator="\n\n",
    ),
    # Gemma has no system role: system text goes first in the user turn.
    "gemma": Template(
        "gemma",
        JoinedTurn(
            (
                Segment("<start_of_turn>", special=True),
                Segment("user\n"),
                None,
                Segment("<end_of_turn>", special=True),
                Segment("\n"),
                Segment("<start_of_turn>", special=True),
                Segment("model\n"),
            ),
            end=(Segment("<end_of_turn>", True, True),),
            tail=(Segment("\n"),),
        ),
        begin=("<bos>",),
        stop_tokens=("<end_of_turn>", "<eos>"),
    ),
    "llama3": Template(
        "llama3",
        HeaderTurn(
            (
                Segment("<|start_header_id|>", special=True),
                None,
                Segment("<|end_header_id|>", special=True),
                Segment("\n\n"),
            ),
            end=Segment("<|eot_id|>", special=True),
        ),
        begin=("<|begin_of_text|>",),
        stop_tokens=("<|eot_id|>", "<|end_of_text|>"),
    ),
}


def custom_template(fmt: str, begin: str = "<bos>", end: str = "<eos>") -> Template:
    """A template from a user format string with `{prompt}` and `{response}`.

    The string is read as Python's `str.format` reads it: `{{` and `}}` are
    literal braces. Everything before `{response}` is the prompt (no loss),
    with the turn's system and user messages, joined by a blank line, in
    place of each `{prompt}`; the response and the end token after it bear
    loss; text after `{response}` is dropped.

    Raises:
        ValueError: naming the `template` setting, when the string is not a
            valid format string, lacks `{prompt}`, does not end with one
            `{response}`, or names another field.
    """
    head = _parse_format(fmt)
    return Template(
        "custom",
        JoinedTurn(head, end=(Segment(end, True, True),)),
        begin=(begin,),
        stop_tokens=(end,),
    )


def _parse_format(fmt: str) -> tuple[Segment | None, ...]:
    """The prompt part of a custom format: literal text and `None` per `{prompt}`."""
    need = (
        "A custom `template` is a format string with `{prompt}` (the user's text) "
        "that ends with one `{response}` (the reply); write `{{` and `}}` for "
        "literal braces."
    )
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError as e:
        raise ValueError(
            f"{need} It is not a valid format string ({e}). Received: template={fmt!r}"
        ) from None
    head: list[Segment | None] = []
    fields: list[str] = []
    for literal, field, spec, conversion in parsed:
        if fields and fields[-1] == "response":
            if field is not None:
                raise ValueError(
                    f"{need} `{{{field}}}` comes after `{{response}}`. Received: template={fmt!r}"
                )
            break  # text after {response} is dropped
        if literal and head and head[-1] is not None:  # "{{" splits a literal
            head[-1] = Segment(head[-1].text + literal)
        elif literal:
            head.append(Segment(literal))
        if field is None:
            continue
        if field not in ("prompt", "response"):
            raise ValueError(
                f"{need} It names an unknown field `{{{field}}}`. Received: template={fmt!r}"
            )
        if spec or conversion:
            raise ValueError(
                f"{need} Fields take no conversion or format spec; "
                f"`{{{field}}}` has one. Received: template={fmt!r}"
            )
        fields.append(field)
        if field == "prompt":
            head.append(None)
    if "prompt" not in fields:
        raise ValueError(
            f"{need} It has no `{{prompt}}`, so the prompt would be "
            f"dropped. Received: template={fmt!r}"
        )
    if "response" not in fields:
        raise ValueError(f"{need} It has no `{{response}}`. Received: template={fmt!r}")
    return tuple(head)


def get_template(name_or_format: str) -> Template:
    """Returns a built-in template by name, or a custom one for "{...}" strings."""
    if "{" in name_or_format or "}" in name_or_format:
        return custom_template(name_or_format)
    try:
        return TEMPLATES[name_or_format]
    except KeyError:
        raise ValueError(
            f"Unknown template {name_or_format!r}. Choose one of "
            f"{sorted(TEMPLATES)} or pass a format string with {{prompt}} and "
            "{response}."
        ) from None
