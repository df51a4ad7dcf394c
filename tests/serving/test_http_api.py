"""`keras-ft serve`'s API through a real HTTP client, against a server on a
free loopback port: non-streaming and streamed completions, the models list,
and 4xx JSON errors naming the field, after which the server still answers."""

import http.client
import json
import threading

import pytest

from keras_ft.serving.http_api import make_server, parse_request
from keras_ft.templates import Message


@pytest.fixture(scope="module")
def server(chat_model):
    server = make_server(chat_model, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def request(server, method, path, body=None, raw=None):
    """(status, headers, body bytes) of one request on a new connection."""
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"} if data is not None else {}
    connection.request(method, path, body=data, headers=headers)
    response = connection.getresponse()
    out = response.status, dict(response.getheaders()), response.read()
    connection.close()
    return out


def post(server, body=None, raw=None):
    status, headers, data = request(server, "POST", "/v1/chat/completions", body, raw)
    return status, headers, data


def events(data: bytes) -> list:
    """The server-sent events' payloads, in order (JSON decoded, but [DONE])."""
    text = data.decode()
    assert text.endswith("\n\n")
    out = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        payload = block[len("data: ") :]
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "How do I boil an egg?"},
    {"role": "assistant", "content": "Fill a pot with water."},
    {"role": "user", "content": "And then?"},
]


def test_models_lists_the_served_model(server, chat_model):
    status, headers, data = request(server, "GET", "/v1/models")
    assert status == 200 and headers["Content-Type"] == "application/json"
    models = json.loads(data)
    assert [m["id"] for m in models["data"]] == [chat_model.name]


def test_a_completion_answers_the_whole_conversation(server, chat_model):
    status, _, data = post(server, {"messages": CONVERSATION, "temperature": 0, "max_tokens": 5})
    assert status == 200, data
    answer = json.loads(data)
    sent = chat_model.last
    assert sent.messages == tuple(Message(m["role"], m["content"]) for m in CONVERSATION)
    assert sent.cfg.sampler == "greedy" and sent.cfg.max_new_tokens == 5
    choice = answer["choices"][0]
    assert answer["object"] == "chat.completion" and answer["model"] == chat_model.name
    assert choice["message"] == {"role": "assistant", "content": sent.text.strip()}
    assert choice["finish_reason"] == ("length" if sent.completion_tokens == 5 else "stop")
    assert answer["usage"] == {
        "prompt_tokens": len(chat_model.encode(sent.messages)),
        "completion_tokens": sent.completion_tokens,
        "total_tokens": len(sent.prompt_ids) + sent.completion_tokens,
    }
    # The same request streamed: the deltas make the same reply.
    body = {"messages": CONVERSATION, "temperature": 0, "max_tokens": 5, "stream": True}
    status, headers, data = post(server, {**body, "stream_options": {"include_usage": True}})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    chunks = events(data)
    assert chunks[-1] == "[DONE]"
    usage, finish = chunks[-2], chunks[-3]
    assert usage["usage"] == answer["usage"] and usage["choices"] == []
    assert finish["choices"][0]["finish_reason"] == choice["finish_reason"]
    deltas = [c["choices"][0]["delta"] for c in chunks[:-3]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d["content"] for d in deltas).strip() == choice["message"]["content"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks[:-1])


def test_sampling_fields_reach_the_generation_settings(server, chat_model):
    body = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "temperature": 0.7,
        "top_p": 0.8,
        "seed": 3,
        "max_completion_tokens": 3,
        "repetition_penalty": 1.3,
        "model": "anything",
    }
    status, _, data = post(server, body)
    assert status == 200, data
    cfg = chat_model.last.cfg
    assert (cfg.sampler, cfg.temperature, cfg.top_p, cfg.seed) == ("top_p", 0.7, 0.8, 3)
    assert (cfg.max_new_tokens, cfg.repetition_penalty) == (3, 1.3)
    assert chat_model.last.messages == (Message("user", "Hi"),)


def test_openai_sampling_fields_map_to_keras_ft_samplers():
    messages = [{"role": "user", "content": "Hi"}]

    def changes(**fields):
        return parse_request({"messages": messages, **fields})[1]

    assert changes(temperature=0, top_p=0.5) == {"sampler": "greedy"}
    assert changes(temperature=1.5) == {"sampler": "random", "temperature": 1.5}
    assert changes(top_p=0.5) == {"sampler": "top_p", "top_p": 0.5}
    assert changes(top_k=3, temperature=0.5) == {
        "sampler": "top_k",
        "top_k": 3,
        "temperature": 0.5,
    }
    assert changes(max_tokens=7, max_completion_tokens=9) == {"max_new_tokens": 9}
    assert changes(frequency_penalty=0, presence_penalty=0.0) == {}  # zero: no penalty asked
    assert changes() == {}  # the server's own settings


LONG = "The quick brown fox jumps over the lazy dog. " * 20
BAD_REQUESTS = [
    ({}, "messages", "required"),
    ({"messages": []}, "messages", "non-empty"),
    ({"messages": "Hi"}, "messages", "array"),
    ({"messages": [{"role": "robot", "content": "Hi"}]}, "messages[0].role", "robot"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content", "string"),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "string"),
    (
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
        "messages[1].role",
        "last message",
    ),
    ({"messages": [{"role": "user", "content": "a"}], "temperature": -1}, "temperature", "0"),
    ({"messages": [{"role": "user", "content": "a"}], "temperature": "hot"}, "temperature", ""),
    ({"messages": [{"role": "user", "content": "a"}], "top_p": 1.5}, "top_p", r"(0, 1]"),
    ({"messages": [{"role": "user", "content": "a"}], "max_tokens": 0}, "max_tokens", "1"),
    ({"messages": [{"role": "user", "content": "a"}], "max_tokens": 2.5}, "max_tokens", "integer"),
    ({"messages": [{"role": "user", "content": "a"}], "seed": -1}, "seed", "seed"),
    ({"messages": [{"role": "user", "content": "a"}], "stream": "yes"}, "stream", "boolean"),
    (
        {"messages": [{"role": "user", "content": "a"}], "frequency_penalty": 0.5},
        "frequency_penalty",
        "repetition_penalty",
    ),
    (
        {"messages": [{"role": "user", "content": "a"}], "repetition_penalty": 0},
        "repetition_penalty",
        "repetition_penalty",
    ),
    ({"messages": [{"role": "user", "content": "a"}], "n": 2}, "n", "one reply"),
    ({"messages": [{"role": "user", "content": "a"}], "temprature": 1}, "temprature", "Unknown"),
    ({"messages": [{"role": "user", "content": LONG}]}, "messages", "context is 160"),
    ({"messages": [{"role": "user", "content": LONG}], "stream": True}, "messages", "context"),
]


@pytest.mark.parametrize("body, param, words", BAD_REQUESTS)
def test_a_bad_request_gets_a_400_naming_the_field(server, body, param, words):
    status, headers, data = post(server, body)
    assert status == 400 and headers["Content-Type"] == "application/json", data
    error = json.loads(data)["error"]
    assert error["param"] == param and words in error["message"]
    assert error["type"] == "invalid_request_error"


def test_the_server_survives_bad_requests_and_says_what_is_wrong(server):
    for raw in (b"{not json", b"[1, 2]", '{"messages": "\xe9"}'.encode("latin-1")):
        status, _, data = post(server, raw=raw)
        assert status == 400 and "JSON" in json.loads(data)["error"]["message"]
    assert request(server, "GET", "/v1/nothing")[0] == 404
    assert request(server, "GET", "/v1/chat/completions")[0] == 405
    assert post(server, {"messages": [{"role": "user", "content": LONG}]})[0] == 400
    long_error = json.loads(post(server, {"messages": [{"role": "user", "content": LONG}]})[2])
    assert long_error["error"]["code"] == "context_length_exceeded"
    status, _, data = post(server, {"messages": CONVERSATION})
    assert status == 200 and json.loads(data)["choices"][0]["message"]["role"] == "assistant"
