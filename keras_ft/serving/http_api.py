"""`keras-ft serve`: an OpenAI-style chat completions API on a local port.

    POST /v1/chat/completions   {"messages": [...], "stream": false, ...}
    GET  /v1/models

A request's messages are rendered with the chat's template (the adapter's
own) and answered by `ChatModel`, one request at a time (the others wait for
the model's lock). Non-streaming answers are one JSON body with
`choices[0].message.content`, `finish_reason` ("stop": an end of turn;
"length": `max_tokens` ran out) and `usage`; `"stream": true` answers with
server-sent events, `data: {chunk}` per piece of text (`choices[0].delta`)
and `data: [DONE]` last. A bad request (not JSON, a missing or mistyped
field, an unknown role or sampler value, a conversation longer than the
context) gets a 4xx with OpenAI's error body `{"error": {"message", "type",
"param", "code"}}` naming the field; nothing a client sends stops the server.

The standard library's `ThreadingHTTPServer` rather than an ASGI server
(uvicorn and starlette come with Gradio): `serve` then needs no optional
dependency, and since the model answers one request at a time, an async
server would only queue requests differently.
"""

from __future__ import annotations

import http.server
import json
import logging
import math
import threading
import time
import uuid

from keras_ft.serving.session import ChatModel, ContextLengthError
from keras_ft.templates import ROLES, Message

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 2**20  # a request body longer than this is refused (413)
# Fields a client may send; any other is refused by name (a typo is not ignored).
KNOWN_FIELDS = {
    "messages",
    "model",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "max_completion_tokens",
    "seed",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "frequency_penalty",
    "presence_penalty",
    "n",
    "stop",
    "user",
    "logprobs",
}


class RequestError(ValueError):
    """A request the API refuses: status, message, and the field it names."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code=None):
        super().__init__(message)
        self.param, self.status, self.code = param, status, code

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {
            "error": {"message": str(self), "type": kind, "param": self.param, "code": self.code}
        }


def make_server(chat: ChatModel, host: str = "127.0.0.1", port: int = 8000) -> "ChatServer":
    """The API server for `chat`, bound to host:port (0: a free port), not yet serving.

    Call `serve_forever()` (in a thread, for tests) and `shutdown()`; the
    bound port is `server.server_address[1]`.
    """
    return ChatServer((host, port), chat)


class ChatServer(http.server.ThreadingHTTPServer):
    daemon_threads = True  # a client still streaming does not keep the process alive

    def __init__(self, address, chat: ChatModel):
        self.chat = chat
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for JSON answers; streams close
    server: ChatServer

    def log_message(self, fmt, *args):  # the server's log, not stderr's raw lines
        log.info("%s - %s", self.address_string(), fmt % args)

    def do_GET(self):
        path = self.path.split("?")[0].rstrip("/")
        if path == "/v1/models":
            created = int(time.time())
            model = {"id": self.server.chat.name, "object": "model", "created": created}
            self._json(200, {"object": "list", "data": [{**model, "owned_by": "keras-ft"}]})
        elif path in ("/v1/chat/completions",):
            self._error(RequestError(f"{path} takes POST.", status=405))
        else:
            self._error(RequestError(f"No route {path}; try /v1/chat/completions.", status=404))

    def do_POST(self):
        path = self.path.split("?")[0].rstrip("/")
        try:
            if path != "/v1/chat/completions":
                raise RequestError(f"No route {path}; try /v1/chat/completions.", status=404)
            self._chat_completion(self._read_json())
        except RequestError as e:
            self._error(e)
        except Exception as e:  # noqa: BLE001 - answered, logged; the server keeps serving
            log.exception("A chat completion failed")
            self._error(RequestError(f"Generation failed: {type(e).__name__}: {e}", status=500))

    def _read_json(self) -> dict:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise RequestError("The request needs a Content-Length header.", status=411) from None
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the body is not read
            raise RequestError(
                f"The request body is {length} bytes; at most {MAX_BODY_BYTES}.", status=413
            )
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RequestError(f"The request body is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise RequestError(f"The request body must be a JSON object, not {_kind(body)}.")
        return body

    def _chat_completion(self, body: dict) -> None:
        chat = self.server.chat
        messages, changes, stream, usage_chunk = parse_request(body)
        try:
            cfg = chat.settings(**changes)
        except ValueError as e:  # Config's range checks name its field
            raise RequestError(str(e), param=_field_named(str(e), changes)) from None
        try:
            reply = chat.start(messages, cfg)
        except ContextLengthError as e:
            raise RequestError(str(e), param="messages", code="context_length_exceeded") from None
        except ValueError as e:
            raise RequestError(str(e), param="messages") from None
        head = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "created": int(time.time()),
            "model": chat.name,
        }
        if not stream:
            for _ in chat.stream(reply):
                pass
            self._json(
                200,
                {
                    **head,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply.text},
                            "finish_reason": reply.finish_reason,
                        }
                    ],
                    "usage": _usage(reply),
                },
            )
            return
        self._stream(chat, reply, head, usage_chunk)

    def _stream(self, chat, reply, head, usage_chunk: bool) -> None:
        """Server-sent events: a role chunk, one per piece, the finish, [DONE]."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # the end of the stream ends the body
        self.end_headers()
        self.close_connection = True
        stop = threading.Event()  # set when the client goes away: stop decoding

        def chunk(delta: dict, finish=None) -> dict:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return {**head, "object": "chat.completion.chunk", "choices": [choice]}

        try:
            self._event(chunk({"role": "assistant", "content": ""}))
            pieces = chat.stream(reply, stop)
            for piece in pieces:
                try:
                    self._event(chunk({"content": piece}))
                except OSError:
                    stop.set()
            if stop.is_set():
                return
            self._event(chunk({}, reply.finish_reason))
            if usage_chunk:
                self._event(
                    {
                        **head,
                        "object": "chat.completion.chunk",
                        "choices": [],
                        "usage": _usage(reply),
                    }
                )
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except OSError:  # the client went away
            log.info("A streaming client disconnected")
        except Exception as e:  # noqa: BLE001 - headers are sent: an error event, then done
            log.exception("A streamed chat completion failed")
            error = RequestError(f"Generation failed: {type(e).__name__}: {e}", status=500)
            try:
                self._event(error.body())
            except OSError:
                pass

    def _event(self, data: dict) -> None:
        self.wfile.write(b"data: " + json.dumps(data).encode() + b"\n\n")
        self.wfile.flush()

    def _json(self, status: int, data: dict) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, error: RequestError) -> None:
        self._json(error.status, error.body())


def _usage(reply) -> dict:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def _kind(value) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _field_named(message: str, changes: dict) -> str | None:
    """The request field a Config error names (`top_p` -> top_p, `max_new_tokens`
    -> max_tokens)."""
    request_names = {"max_new_tokens": "max_tokens"}
    for name in changes:
        if f"`{name}`" in message:
            return request_names.get(name, name)
    return None


def _number(body: dict, name: str, integer: bool = False):
    value = body.get(name)
    if value is None:
        return None
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (not integer and not math.isfinite(value)):
        what = "an integer" if integer else "a number"
        raise RequestError(f"`{name}` must be {what}; received {_kind(value)}.", param=name)
    return value


def parse_messages(value) -> list[Message]:
    """The request's `messages` as keras_ft Messages, each field checked."""
    if value is None:
        raise RequestError("`messages` is required: the conversation so far.", "messages")
    if not isinstance(value, list) or not value:
        raise RequestError(
            f"`messages` must be a non-empty array of {{role, content}} objects; "
            f"received {_kind(value) if value != [] else 'an empty array'}.",
            "messages",
        )
    out = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RequestError(f"`{where}` must be an object; received {_kind(message)}.", where)
        role = message.get("role")
        if role == "developer":  # OpenAI's newer name for the system role
            role = "system"
        if role not in ROLES:
            raise RequestError(
                f"`{where}.role` must be one of {list(ROLES)}; received {role!r}.",
                f"{where}.role",
            )
        content = message.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            parts = []
            for j, part in enumerate(content):
                if not (isinstance(part, dict) and part.get("type") == "text"):
                    raise RequestError(
                        f"`{where}.content[{j}]` must be a text part "
                        '({"type": "text", "text": ...}); only text is served.',
                        f"{where}.content",
                    )
                parts.append(part.get("text"))
            content = "".join(p if isinstance(p, str) else "\0" for p in parts)
            if "\0" in content:
                raise RequestError(
                    f"`{where}.content`'s text parts need a string `text`.", f"{where}.content"
                )
        if not isinstance(content, str):
            raise RequestError(
                f"`{where}.content` must be a string; received {_kind(content)}.",
                f"{where}.content",
            )
        out.append(Message(role, content))
    if out[-1].role != "user":
        raise RequestError(
            f"The last message must be the user's (the turn to answer); "
            f"`messages[{len(out) - 1}].role` is {out[-1].role!r}.",
            f"messages[{len(out) - 1}].role",
        )
    return out


def parse_request(body: dict) -> tuple[list[Message], dict, bool, bool]:
    """(messages, sampler changes for `ChatModel.settings`, stream, usage chunk).

    OpenAI's fields map to keras_ft's: temperature 0 is greedy, another
    temperature samples with it (keras-hub's plain sampler unless top_p or
    the extension `top_k` is given); `max_tokens` (or
    `max_completion_tokens`) is max_new_tokens. frequency and presence
    penalties are OpenAI's additive penalties, which keras_ft does not
    have: a non-zero one is refused, pointing to the extension
    `repetition_penalty` (transformers' multiplicative one).
    """
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise RequestError(
            f"Unknown field `{unknown[0]}`; this API takes {sorted(KNOWN_FIELDS)}.", unknown[0]
        )
    messages = parse_messages(body.get("messages"))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(f"`stream` must be a boolean; received {_kind(stream)}.", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise RequestError(
            '`stream_options` must be an object with at most "include_usage".', "stream_options"
        )
    for name in ("model", "user"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise RequestError(f"`{name}` must be a string; received {_kind(body[name])}.", name)
    n = _number(body, "n", integer=True)
    if n not in (None, 1):
        raise RequestError(f"`n` must be 1 (one reply per request); received {n}.", "n")
    if body.get("stop") is not None:
        raise RequestError(
            "`stop` sequences are not supported: replies end at the template's end of turn.",
            "stop",
        )
    if body.get("logprobs"):
        raise RequestError("`logprobs` are not supported.", "logprobs")
    for name in ("frequency_penalty", "presence_penalty"):
        if _number(body, name):
            raise RequestError(
                f"`{name}` (OpenAI's additive penalty) is not supported; use "
                "`repetition_penalty` (> 1 discourages repeats, 1 is off).",
                name,
            )
    changes: dict = {}
    temperature = _number(body, "temperature")
    top_p = _number(body, "top_p")
    top_k = _number(body, "top_k", integer=True)
    if temperature is not None and temperature < 0:
        raise RequestError(
            f"`temperature` must be at least 0 (0 is greedy); received {temperature}.",
            "temperature",
        )
    if temperature == 0:
        changes["sampler"] = "greedy"
    else:
        if temperature is not None:
            changes["temperature"] = float(temperature)
        if top_k is not None:
            changes["sampler"], changes["top_k"] = "top_k", top_k
        elif top_p is not None:
            changes["sampler"], changes["top_p"] = "top_p", float(top_p)
        elif temperature is not None:
            changes["sampler"] = "random"  # OpenAI's plain sampling at that temperature
        if top_k is not None and top_p is not None:
            raise RequestError("Give `top_k` or `top_p`, not both.", "top_p")
    max_tokens = _number(body, "max_tokens", integer=True)
    max_completion = _number(body, "max_completion_tokens", integer=True)
    for name, value in (("max_tokens", max_tokens), ("max_completion_tokens", max_completion)):
        if value is not None and value < 1:
            raise RequestError(f"`{name}` must be at least 1; received {value}.", name)
    if max_tokens is not None or max_completion is not None:
        changes["max_new_tokens"] = max_completion if max_completion is not None else max_tokens
    seed = _number(body, "seed", integer=True)
    if seed is not None:
        changes["seed"] = seed
    penalty = _number(body, "repetition_penalty")
    if penalty is not None:
        changes["repetition_penalty"] = float(penalty)
    ngram = _number(body, "no_repeat_ngram_size", integer=True)
    if ngram is not None:
        changes["no_repeat_ngram_size"] = ngram
    return messages, changes, stream, bool(options.get("include_usage"))
