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
            The reply is None when rendering a prompt for generation.
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
    return "\n\n".join(m.content for m in prompt)


def _reply(reply: str | None, end: list[Segment]) -> list[Segment]:
    if reply is None:
        return []
    return [Segment(reply, trainable=True)] + end


def _instruction_turn(prompt, reply):
    # The keras-hub Gemma LoRA guide's format; the end token teaches stopping.
    text = f"Instruction:\n{_user_text(prompt)}\n\nResponse:\n"
    return [Segment(text)] + _reply(reply, [Segment("<eos>", True, True)])


def _gemma_turn(prompt, reply):
    # Gemma has no system role: system text goes first in the user turn.
    segments = [Segment("<start_of_turn>", special=True),
                Segment(f"user\n{_user_text(prompt)}"),
                Segment("<end_of_turn>", special=True),
                Segment("\n"),
                Segment("<start_of_turn>", special=True),
                Segment("model\n")]
    end = [Segment("<end_of_turn>", True, True)]
    return segments + _reply(reply, end) + ([Segment("\n")] if reply is not None else [])


def _llama3_turn(prompt, reply):
    segments = []
    for message in prompt:
        segments += _llama3_header(message.role) + [
            Segment(message.content), Segment("<|eot_id|>", special=True)]
    segments += _llama3_header("assistant")
    return segments + _reply(reply, [Segment("<|eot_id|>", True, True)])


def _llama3_header(role: str) -> list[Segment]:
    return [Segment("<|start_header_id|>", special=True), Segment(role),
            Segment("<|end_header_id|>", special=True), Segment("\n\n")]


TEMPLATES: dict[str, Template] = {
    "instruction": Template("instruction", _instruction_turn, begin=("<bos>",),
                            stop_tokens=("<eos>",), turn_separator="\n\n"),
    "gemma": Template("gemma", _gemma_turn, begin=("<bos>",),
                      stop_tokens=("<end_of_turn>", "<eos>")),
    "llama3": Template("llama3", _llama3_turn, begin=("<|begin_of_text|>",),
                       stop_tokens=("<|eot_id|>", "<|end_of_text|>")),
}


def custom_template(fmt: str, begin: str = "<bos>", end: str = "<eos>") -> Template:
    """A template from a user format string with `{prompt}` and `{response}`.

    Everything before `{response}` is the prompt (no loss); the response and
    the end token after it bear loss; text after `{response}` is dropped.

    Raises:
        ValueError: when the string lacks a field or names an unknown one.
    """
    fields = [f for _, f, _, _ in string.Formatter().parse(fmt) if f is not None]
    if fields.count("response") != 1 or fields[-1] != "response" or set(fields) - {
            "prompt", "response"}:
        raise ValueError(
            "A template format string must use `{prompt}` and end with one "
            f"`{{response}}` field. Received: template={fmt!r}")
    head = fmt[: fmt.index("{response}")]

    def turn(prompt, reply):
        text = head.replace("{prompt}", _user_text(prompt))
        return [Segment(text)] + _reply(reply, [Segment(end, True, True)])

    return Template("custom", turn, begin=(begin,), stop_tokens=(end,))


def get_template(name_or_format: str) -> Template:
    """Returns a built-in template by name, or a custom one for "{...}" strings."""
    if "{" in name_or_format:
        return custom_template(name_or_format)
    try:
        return TEMPLATES[name_or_format]
    except KeyError:
        raise ValueError(
            f"Unknown template {name_or_format!r}. Choose one of "
            f"{sorted(TEMPLATES)} or pass a format string with {{prompt}} and "
            "{response}.") from None
