"""A chat with a preset (+ adapter): the model, one reply at a time, a conversation.

`ChatModel` holds the loaded causal LM and the chat's settings (a `Config`:
the template the adapter was trained with, the sampler); `ChatModel.reply`
streams one reply to a conversation ending on a user turn, rendered with
that template exactly as in training (`generation.stream.stream_reply`), and
records what the model was given (`ChatModel.last`). `Conversation` is one
history (the terminal's; the browser keeps its own in the page, the HTTP API
gets it with every request). `chat_config` and `load_chat` are what `keras-ft
chat` and `keras-ft serve` share: the adapter's recorded settings, then the
model.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
from keras_ft.config import SAMPLER_FIELDS, Config, load_config
from keras_ft.data.tokenizer import TextTokenizer
from keras_ft.evaluation.runs import adapter_defaults, load_run_config, resolve_run
from keras_ft.generation import stream as streaming
from keras_ft.generation.generate import encode_prompt
from keras_ft.model.causal_lm import load_causal_lm
from keras_ft.model.lora import read_adapter
from keras_ft.model.presets import resolve_preset
from keras_ft.preset_files import preset_context_length
from keras_ft.templates import ROLES, Message, get_template


def chat_config(adapter: str | None, config_path: str | None, overrides: dict) -> Config:
    """A chat's settings: defaults < --config < what the adapter recorded < flags.

    As `keras-ft evaluate` reads them: an adapter in a run directory (or a
    checkpoint) brings its run's config, unless --config is given; a bare
    adapter file its `adapter_config.json` (preset and template). With
    --config, the adapter's recorded template still wins over the file's
    (as in `keras-ft generate`): a chat is rendered as the adapter was trained.

    Raises:
        FileNotFoundError: no adapter at `adapter` (before any model loads).
        ValueError: a flag or YAML value that does not validate.
    """
    if not adapter:
        return load_config(config_path, overrides)
    read_adapter(adapter)  # a missing adapter is said before the model loads
    run_dir, run_cfg = resolve_run(adapter)
    if run_dir and not config_path:
        return load_run_config(run_cfg, overrides)
    recorded = adapter_defaults(adapter)
    if config_path:  # the file names the preset; the template is the adapter's
        recorded = {k: v for k, v in recorded.items() if k == "template"}
    recorded.pop("sequence_length", None)  # a training setting; a chat has its context
    return load_config(config_path, {**recorded, **overrides})


def load_chat(cfg: Config, adapter: str | None = None, name: str | None = None) -> "ChatModel":
    """Loads `cfg.preset` (+ `adapter`) for chatting with `cfg`'s template."""
    preset = resolve_preset(cfg.preset)
    causal_lm = load_causal_lm(preset, adapter=adapter or None)
    found = preset_context_length(preset)  # else the model's own (`ChatModel`)
    return ChatModel(
        causal_lm,
        cfg,
        context_length=found[0] if found else None,
        context_source=f"{found[1]} of the preset" if found else "",
        name=name or model_name(cfg.preset, adapter),
    )


def model_name(preset: str, adapter: str | None) -> str:
    """The name a chat's model goes by (the HTTP API's `model`): preset[+adapter]."""
    name = Path(preset.rstrip("/")).name or preset
    if adapter:
        path = Path(adapter)
        run = path if path.is_dir() else path.parent
        name += f"+{run.name or adapter}"
    return name


@dataclasses.dataclass
class Reply:
    """One streamed reply, and what the model was given for it.

    Iterate it for the new text pieces as they are decoded; once done,
    `text`, `completion_tokens` and `finish_reason` ("stop": an end of turn
    came, or the reply was stopped; "length": `max_new_tokens` ran out) say
    how it ended.
    """

    messages: tuple[Message, ...]  # the conversation the reply answers
    prompt_ids: list[int]  # it, rendered with the template and tokenized
    cfg: Config
    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None  # None until the reply is done
    stopped: bool = False  # ended by the caller's `stop` event

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)


class ChatModel:
    """A loaded causal LM with its chat settings; generates one reply at a time.

    Args:
        causal_lm: the keras-hub CausalLM (adapter applied).
        cfg: the chat's settings: `template` renders every conversation,
            the sampler fields are each request's defaults.
        context_length: the model's context (tokens), e.g. what its preset
            records; None: `stream_reply`'s default (the backbone's
            `max_sequence_length`, else the preprocessor's `sequence_length`).
            A conversation that fills it is refused before decoding; a reply
            that reaches it ends there ("length").
        name: what the model is called (the HTTP API's `model`).
        context_source: where `context_length` comes from, for messages.
    """

    def __init__(
        self,
        causal_lm,
        cfg: Config,
        tokenizer: TextTokenizer | None = None,
        context_length: int | None = None,
        name: str = "keras-ft",
        context_source: str = "the chat's context_length",
    ):
        self.causal_lm, self.cfg, self.name = causal_lm, cfg, name
        self.tokenizer = tokenizer or TextTokenizer(causal_lm.preprocessor.tokenizer)
        self.template = get_template(cfg.template)
        # (limit, where it comes from), or None: no known limit.
        self.context = streaming.context_length(causal_lm, context_length)
        if context_length is not None:
            self.context = (context_length, context_source)
        self.context_length = self.context[0] if self.context else None
        # One generation at a time: the model's compiled loop and its
        # sampler's seed state are shared by every caller (browser tabs,
        # HTTP threads).
        self.lock = threading.Lock()
        self.last: Reply | None = None  # the latest reply started, for tests and logs

    def settings(self, **changes) -> Config:
        """The chat's Config with some sampler fields changed (None: unchanged).

        Raises:
            ValueError: naming a field that is not a sampler setting, or a
                value Config refuses (e.g. `top_p` out of (0, 1]).
        """
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = sorted(set(changes) - set(SAMPLER_FIELDS))
        if unknown:
            raise ValueError(
                f"Not sampler settings: {unknown}; a chat may change {list(SAMPLER_FIELDS)}."
            )
        missing = sorted(set(changes) - {f.name for f in dataclasses.fields(Config)})
        if missing:
            raise ValueError(f"This keras_ft has no setting {missing[0]!r}.")
        return dataclasses.replace(self.cfg, **changes)

    def encode(self, messages: Sequence[Message]) -> list[int]:
        """The prompt's token ids, rendered with the chat's template."""
        return encode_prompt(list(messages), self.template, self.tokenizer)

    def check_context(self, prompt_tokens: int) -> None:
        """Refuses a conversation that leaves no room for a reply in the context.

        The limit is `stream_reply`'s (`generation.stream.context_length`),
        checked here too so that the refusal is a `ContextLengthError` (the
        HTTP API's `context_length_exceeded`) said before anything is queued.
        """
        if self.context is not None and prompt_tokens >= self.context[0]:
            limit, where = self.context
            raise ContextLengthError(
                f"The conversation is {prompt_tokens} tokens; the model's context is {limit} "
                f"tokens ({where}), which leaves no room for a reply. Start a new "
                "conversation (or drop earlier turns), or send a shorter message."
            )

    def start(self, messages: Sequence[Message], cfg: Config | None = None) -> Reply:
        """A reply to `messages` (ending on a user turn), checked, not yet decoding.

        Raises:
            ValueError: a conversation that does not end on a user turn, has
                an unknown role, or does not fit the context
                (`ContextLengthError`).
        """
        cfg = cfg or self.cfg
        messages = tuple(messages)
        for i, message in enumerate(messages):
            if message.role not in ROLES:
                raise ValueError(
                    f"messages[{i}].role must be one of {list(ROLES)}. Received: {message.role!r}"
                )
        ids = self.encode(messages)  # says a conversation that ends on a reply
        self.check_context(len(ids))
        return Reply(messages, ids, cfg)

    def stream(self, reply: Reply, stop: threading.Event | None = None) -> Iterator[str]:
        """Decodes `reply` (from `start`), yielding new text as it comes.

        Waits for any other reply to finish first. `stop` set ends the reply
        early (between tokens); it then counts as finished ("stop").
        """
        with self.lock:
            self.last = reply
            stats: dict = {}
            pieces = streaming.stream_reply(
                self.causal_lm,
                list(reply.messages),
                reply.cfg,
                tokenizer=self.tokenizer,
                stop=stop,
                max_prompt_tokens=self.context_length,
                stats=stats,
            )
            try:
                for piece in pieces:
                    reply.text += piece
                    yield piece
            finally:  # also when the caller breaks off (a closed stream, Ctrl-C)
                getattr(pieces, "close", lambda: None)()  # its decoding ends with it
                self._finish(reply, stop, stats.get("num_tokens", 0))

    def _finish(self, reply: Reply, stop, num_tokens: int) -> None:
        """Sets how `reply` ended: `num_tokens` new tokens (its end of turn not
        counted), "length" when they filled the room (`max_new_tokens`, or the
        context), "stop" otherwise (an end of turn came, or `stop` was set)."""
        reply.stopped = bool(stop is not None and stop.is_set())
        reply.completion_tokens = num_tokens
        room = reply.cfg.max_new_tokens
        if self.context_length is not None:
            room = min(room, self.context_length - reply.prompt_tokens)
        full = reply.completion_tokens >= room
        reply.finish_reason = "length" if full and not reply.stopped else "stop"

    def reply(
        self,
        messages: Sequence[Message],
        cfg: Config | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[str]:
        """`start` then `stream`: the new text pieces of a reply to `messages`."""
        return self.stream(self.start(messages, cfg), stop)


class ContextLengthError(ValueError):
    """A conversation (and the room for its reply) longer than the model's context."""


class Conversation:
    """One chat's history: the system prompt, then user and assistant turns.

    `send` streams the reply to a new user message with the whole history
    before it; the turn joins the history once the reply is done (a reply
    stopped early joins as far as it came; one refused, e.g. for the
    context, leaves the history as it was).
    """

    def __init__(self, chat: ChatModel, system: str = ""):
        self.chat, self.system = chat, system
        self.history: list[Message] = []

    def messages(self, text: str | None = None) -> list[Message]:
        """The system prompt, the history and (if given) a new user message."""
        head = [Message("system", self.system)] if self.system else []
        tail = [Message("user", text)] if text is not None else []
        return head + self.history + tail

    def send(
        self, text: str, cfg: Config | None = None, stop: threading.Event | None = None
    ) -> Iterator[str]:
        """Streams the reply to `text`; raises ValueError before decoding when
        the conversation does not fit the context (see `ChatModel.start`)."""
        reply = self.chat.start(self.messages(text), cfg)
        return self._stream(text, reply, stop)

    def _stream(self, text, reply, stop):
        try:
            yield from self.chat.stream(reply, stop)
        finally:  # stopped, or the caller broke off: the turn as far as it came
            if reply.finish_reason:
                self.history += [Message("user", text), Message("assistant", reply.text.strip())]

    def reset(self) -> None:
        """Forgets the turns (the system prompt stays)."""
        self.history = []
