"""The chat's session: settings from the adapter, the history each reply gets
(rendered with the adapter's template), the context check, stopping."""

import threading

import pytest
import yaml

from keras_ft.generation.generate import encode_prompt, generate_function, generate_replies
from keras_ft.serving.session import ContextLengthError, Conversation, chat_config
from keras_ft.templates import Message, get_template


def test_the_chat_takes_the_adapters_preset_and_template(adapter_run, chat_preset, tmp_path):
    cfg = chat_config(str(adapter_run), None, {})
    assert (cfg.preset, cfg.template) == (str(chat_preset), "gemma")
    assert chat_config(str(adapter_run), None, {"template": "instruction"}).template == (
        "instruction"
    )
    # An experiment file names the preset; the template stays the adapter's.
    experiment = tmp_path / "chat.yaml"
    experiment.write_text(yaml.safe_dump({"preset": "elsewhere", "template": "llama3"}))
    cfg = chat_config(str(adapter_run), str(experiment), {})
    assert (cfg.preset, cfg.template) == ("elsewhere", "gemma")
    with pytest.raises(FileNotFoundError, match="No adapter"):
        chat_config(str(tmp_path / "missing"), None, {})


def test_each_reply_gets_the_whole_history_in_the_adapters_template(chat_model):
    conversation = Conversation(chat_model, system="Be brief.")
    first = "".join(conversation.send("How do I boil an egg?"))
    assert chat_model.last.messages == (
        Message("system", "Be brief."),
        Message("user", "How do I boil an egg?"),
    )
    assert first.strip()
    "".join(conversation.send("And then?"))
    sent = chat_model.last.messages
    assert sent == (
        Message("system", "Be brief."),
        Message("user", "How do I boil an egg?"),
        Message("assistant", first.strip()),
        Message("user", "And then?"),
    )
    template, tokenizer = get_template("gemma"), chat_model.tokenizer
    ids = chat_model.last.prompt_ids
    assert ids == encode_prompt(list(sent), template, tokenizer)
    assert ids.count(tokenizer.special_id("<start_of_turn>")) == 4  # 2 user + 2 model turns
    assert conversation.history == list(sent[1:]) + [
        Message("assistant", chat_model.last.text.strip())
    ]
    # Streamed token by token, the reply is the batch loop's greedy reply.
    batch = generate_replies(
        generate_function(chat_model.causal_lm, chat_model.cfg), [ids], template, tokenizer, 6
    )[0]
    assert chat_model.last.text.strip() == batch["text"]
    assert chat_model.last.completion_tokens == batch["num_tokens"]
    assert chat_model.last.finish_reason == ("stop" if batch["stopped"] else "length")
    conversation.reset()
    assert conversation.history == [] and conversation.messages("x")[0].role == "system"


def test_a_conversation_past_the_context_is_refused_before_decoding(chat_model):
    conversation = Conversation(chat_model)
    "".join(conversation.send("Hi"))
    before, last = list(conversation.history), chat_model.last
    with pytest.raises(ContextLengthError, match="context is 160 tokens"):
        conversation.send("The quick brown fox jumps over the lazy dog. " * 20)
    assert conversation.history == before and chat_model.last is last
    # The limit is stream_reply's: a prompt must leave room for one token.
    chat_model.check_context(159)
    with pytest.raises(ContextLengthError):
        chat_model.check_context(160)


def test_a_stop_event_ends_the_reply_between_tokens(chat_model):
    cfg = chat_model.settings(sampler="top_k", top_k=50, max_new_tokens=40, seed=7)
    messages = [Message("user", "Write a haiku about autumn.")]
    whole = "".join(chat_model.reply(messages, cfg))
    full = chat_model.last.completion_tokens
    assert full > 6 and whole  # without a stop, the reply goes on
    stop = threading.Event()
    pieces = []
    for piece in chat_model.reply(messages, cfg, stop):
        pieces.append(piece)
        if len(pieces) == 2:
            stop.set()
    reply = chat_model.last
    assert len(pieces) == 2 and 2 <= reply.completion_tokens < full
    assert reply.text == "".join(pieces)
    assert reply.stopped and reply.finish_reason == "stop"


def test_a_chat_changes_only_sampler_settings_and_checks_them(chat_model):
    assert chat_model.settings(top_p=0.5, sampler="top_p").top_p == 0.5
    with pytest.raises(ValueError, match="top_p"):
        chat_model.settings(top_p=1.5)
    with pytest.raises(ValueError, match="Not sampler settings"):
        chat_model.settings(lora_rank=3)
    with pytest.raises(ValueError, match="end with a user message"):
        chat_model.start([Message("user", "a"), Message("assistant", "b")])
