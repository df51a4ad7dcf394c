"""`keras-ft chat`'s browser app (Gradio): a streamed, multi-turn chat.

Each browser tab keeps its own history in its chat box; every turn sends the
whole history (system prompt first) to `ChatModel`, which renders it with the
chat's template (the adapter's own) and streams the reply into the page token
by token. The sampler's settings sit beside the chat; Stop ends the reply
between two tokens. A reply that cannot be made (a setting out of range, a
conversation grown past the context, a failure while decoding) is said in
the status line under the chat: the page keeps working.
"""

from __future__ import annotations

import inspect
import logging
import threading

import gradio as gr

from keras_ft.config import SAMPLERS, Config
from keras_ft.serving.session import ChatModel
from keras_ft.templates import Message

log = logging.getLogger(__name__)


def build_app(chat: ChatModel, system: str = "") -> gr.Blocks:
    """The Gradio app chatting with `chat`; `system` is the initial system prompt."""
    return ChatApp(chat, system).blocks


class ChatApp:
    """The app's handlers, and one stop event per browser session."""

    def __init__(self, chat: ChatModel, system: str = ""):
        self.chat = chat
        self._stops: dict[str, threading.Event] = {}
        self.blocks = self._build(chat.cfg, system)

    def _stop_event(self, request: gr.Request | None) -> threading.Event:
        key = getattr(request, "session_hash", None) or ""
        return self._stops.setdefault(key, threading.Event())

    def _build(self, cfg: Config, system: str) -> gr.Blocks:
        with gr.Blocks(title=f"keras-ft chat: {self.chat.name}", analytics_enabled=False) as app:
            gr.Markdown(f"### {self.chat.name} (template `{cfg.template}`)")
            chatbot = gr.Chatbot(elem_id="chat", label="Chat", height=420, **_messages_format())
            status = gr.Markdown("", elem_id="status")
            message = gr.Textbox(
                elem_id="message",
                show_label=False,
                placeholder="Type a message and press Enter",
            )
            with gr.Row():
                send = gr.Button("Send", variant="primary", elem_id="send")
                stop = gr.Button("Stop", variant="stop", elem_id="stop")
                clear = gr.Button("Clear", elem_id="clear")
            with gr.Accordion("Sampler settings", open=False):
                system_box = gr.Textbox(system, label="System prompt", elem_id="system")
                sampler = gr.Radio(list(SAMPLERS), value=cfg.sampler, label="Sampler")
                temperature = gr.Slider(0.05, 2.0, cfg.temperature, step=0.05, label="Temperature")
                top_k = gr.Number(cfg.top_k, precision=0, minimum=1, label="Top-k")
                top_p = gr.Slider(0.05, 1.0, cfg.top_p, step=0.05, label="Top-p")
                max_new_tokens = gr.Number(
                    cfg.max_new_tokens,
                    precision=0,
                    minimum=1,
                    label="Max new tokens",
                    elem_id="max_new_tokens",
                )
                seed = gr.Number(cfg.seed, precision=0, minimum=0, label="Seed")
                repetition_penalty = gr.Slider(
                    0.5,
                    2.0,
                    cfg.repetition_penalty,
                    step=0.05,
                    label="Repetition penalty (1 = off)",
                )
                no_repeat_ngram_size = gr.Number(
                    cfg.no_repeat_ngram_size,
                    precision=0,
                    minimum=0,
                    label="No-repeat n-gram (0 = off)",
                )
            controls = [sampler, temperature, top_k, top_p, max_new_tokens, seed]
            controls += [repetition_penalty, no_repeat_ngram_size]

            # Spelled out: Gradio passes `request` by its annotation, which it
            # finds only in a plain signature (not after *args).
            def respond(
                text,
                history,
                system_text,
                sampler,
                temperature,
                top_k,
                top_p,
                max_new_tokens,
                seed,
                repetition_penalty,
                no_repeat_ngram_size,
                request: gr.Request,
            ):
                values = dict(
                    sampler=sampler,
                    temperature=temperature,
                    top_k=top_k,
                    top_p=top_p,
                    max_new_tokens=max_new_tokens,
                    seed=seed,
                    repetition_penalty=repetition_penalty,
                    no_repeat_ngram_size=no_repeat_ngram_size,
                )
                yield from self.respond(text, history, system_text, values, request)

            inputs = [message, chatbot, system_box, *controls]
            outputs = [message, chatbot, status]
            message.submit(respond, inputs, outputs)
            send.click(respond, inputs, outputs)
            # Not queued behind the reply it stops.
            stop.click(self.stop, None, None, queue=False)
            clear.click(lambda: ([], ""), None, [chatbot, status], queue=False)
        return app

    def stop(self, request: gr.Request) -> None:
        """Ends this session's reply between two tokens."""
        self._stop_event(request).set()

    def respond(self, text, history, system_text, values: dict, request=None):
        """Streams the reply to `text`: yields (textbox, chat history, status)."""
        history = [{"role": m["role"], "content": _text(m["content"])} for m in history or []]
        text = (text or "").strip()
        if not text:
            yield "", history, ""
            return
        stop = self._stop_event(request)
        stop.clear()
        try:
            cfg = self.chat.settings(**_clean(values))
            messages = [Message("system", system_text)] if (system_text or "").strip() else []
            messages += [Message(m["role"], m["content"]) for m in history]
            reply = self.chat.start(messages + [Message("user", text)], cfg)
        except ValueError as e:  # a setting out of range; the context is full
            yield text, history, f"**Not sent:** {e}"
            return
        history = history + [
            {"role": "user", "content": text},
            {"role": "assistant", "content": ""},
        ]
        yield "", history, "Generating..."
        try:
            for piece in self.chat.stream(reply, stop):
                history[-1]["content"] += piece
                yield "", history, "Generating..."
        except Exception as e:  # noqa: BLE001 - said in the page; the app keeps serving
            log.exception("Generation failed")
            yield "", history, f"**Generation failed:** {type(e).__name__}: {e}"
            return
        history[-1]["content"] = reply.text
        yield "", history, _ending(reply)


def _ending(reply) -> str:
    """The status line once a reply is done."""
    n = reply.completion_tokens
    tokens = f"{n} token{'s' * (n != 1)}"
    if reply.stopped:
        return f"Stopped after {tokens}."
    if reply.finish_reason == "length":
        return f"{tokens}: max new tokens reached."
    return f"{tokens}, end of turn."


def _clean(values: dict) -> dict:
    """The page's numbers as Config's types (Gradio gives floats, or None when empty)."""
    out = {}
    for name, value in values.items():
        if value is None or value == "":
            continue
        integers = ("top_k", "max_new_tokens", "seed", "no_repeat_ngram_size")
        if name in integers and float(value).is_integer():
            value = int(value)
        out[name] = value
    return out


def _text(content) -> str:
    """A chat message's text: Gradio 6 hands content as a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", content.get("value", "")))
    if isinstance(content, (list, tuple)):
        return "".join(_text(part) for part in content)
    return str(content or "")


def _messages_format() -> dict:
    """Gradio 5 needs `type="messages"` for role/content dicts; 6 has only that."""
    if "type" in inspect.signature(gr.Chatbot.__init__).parameters:
        return {"type": "messages"}
    return {}


def launch(app: gr.Blocks, host: str, port: int, share: bool, block: bool = True):
    """Serves the app on host:port; Gradio's share link only when asked."""
    app.queue(default_concurrency_limit=1)
    return app.launch(
        server_name=host,
        server_port=port,
        share=share,
        inbrowser=False,
        prevent_thread_lock=not block,
        quiet=not block,
        show_error=True,
    )
