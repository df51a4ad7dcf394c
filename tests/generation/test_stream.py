import io
import threading

import pytest

from keras_ft.config import Config
from keras_ft.data.tokenizer import TextTokenizer
from keras_ft.generation.generate import (
    encode_prompt,
    generate,
    generate_function,
    generate_replies,
)
from keras_ft.generation.stream import _texts, reply_text, stream_reply
from keras_ft.templates import Message, get_template

PROMPT = "How do I fix a squeaky door hinge?"


@pytest.fixture(scope="module")
def gemma3_lm(tiny_gemma3):
    import keras_hub

    return keras_hub.models.CausalLM.from_preset(str(tiny_gemma3))


def _cfg(preset, **kwargs):
    fields = dict(template="gemma", sampler="greedy", max_new_tokens=12)
    return Config(preset=str(preset), **{**fields, **kwargs})


def test_a_greedy_streamed_reply_is_generates_reply(gemma3_lm, tiny_gemma3):
    # Token by token (the compiled prefill, then one compiled step per
    # token), the pieces add up to what the batch loop generates, with the
    # penalties off and on (one implementation of them for both paths).
    conversation = [
        Message("user", "Hi"),
        Message("assistant", "Hello"),
        Message("user", PROMPT),
    ]
    tokenizer = TextTokenizer(gemma3_lm.preprocessor.tokenizer)
    for settings in ({}, {"no_repeat_ngram_size": 2}):
        cfg = _cfg(tiny_gemma3, **settings)
        stats = {}
        pieces = list(stream_reply(gemma3_lm, PROMPT, cfg, stats=stats))
        want = generate(gemma3_lm, [PROMPT], cfg)[0]
        assert len(pieces) > 2 and all(pieces)  # streamed, not one block
        assert "".join(pieces) == want
        assert reply_text(gemma3_lm, PROMPT, cfg) == want
        # The stream's own count of the reply's tokens, as the batch loop's.
        (batch,) = generate_replies(
            generate_function(gemma3_lm, cfg),
            [encode_prompt(PROMPT, get_template("gemma"), tokenizer)],
            get_template("gemma"),
            tokenizer,
            cfg.max_new_tokens,
        )
        assert stats == {
            "num_tokens": batch["num_tokens"],
            "ended_on_stop_token": batch["stopped"],
        }
    # A conversation near the context's end (the preset's sequence_length,
    # 64) gets the reply that fits there; generate does not cut.
    cfg = _cfg(tiny_gemma3)
    room = 64 - len(encode_prompt(conversation, get_template("gemma"), tokenizer))
    assert 0 < room < cfg.max_new_tokens
    whole = generate(gemma3_lm, [conversation], cfg)[0]
    assert "".join(stream_reply(gemma3_lm, conversation, cfg, max_prompt_tokens=100)) == whole
    fits = generate(gemma3_lm, [conversation], _cfg(tiny_gemma3, max_new_tokens=room))[0]
    assert "".join(stream_reply(gemma3_lm, conversation, cfg)) == fits != whole


def test_a_set_stop_event_ends_the_stream_within_one_item(gemma3_lm, tiny_gemma3):
    cfg = _cfg(tiny_gemma3)
    whole = list(stream_reply(gemma3_lm, PROMPT, cfg))
    assert len(whole) > 3
    stop = threading.Event()
    stream = stream_reply(gemma3_lm, PROMPT, cfg, stop=stop)
    first = next(stream)
    stop.set()
    rest = list(stream)
    assert first == whole[0] and len(rest) <= 1


def test_a_conversation_too_long_for_the_context_is_refused_before_decoding(gemma3_lm, tiny_gemma3):
    # Raised by the call itself: a server can answer before any stream starts.
    cfg = _cfg(tiny_gemma3)
    tokenizer = TextTokenizer(gemma3_lm.preprocessor.tokenizer)
    size = len(encode_prompt("one two three", get_template("gemma"), tokenizer))
    message = f"The conversation is {size} tokens; the model's context is {size - 1} "
    with pytest.raises(ValueError, match=message + r"\(max_prompt_tokens\)"):
        stream_reply(gemma3_lm, "one two three", cfg, max_prompt_tokens=size - 1)
    long = " ".join(["the quick brown fox"] * 30)  # past the preset's sequence_length, 64
    with pytest.raises(ValueError, match=r"context is 64 \(its preprocessor's sequence_length\)"):
        stream_reply(gemma3_lm, long, cfg)
    with pytest.raises(ValueError, match=r"context is 64"):
        reply_text(gemma3_lm, long, cfg)


def test_text_pieces_wait_for_a_whole_utf8_character():
    # Byte-fallback pieces of one character come one token at a time: no
    # piece shows half a character, and the pieces add up to the whole text.
    import sentencepiece

    from keras_ft.testing import TINY_CORPUS

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(TINY_CORPUS * 4),
        model_writer=model,
        vocab_size=400,
        model_type="BPE",
        byte_fallback=True,
        minloglevel=2,
    )

    class Proto:  # what TextTokenizer reads of a keras-hub tokenizer
        proto = model.getvalue()

    tokenizer = TextTokenizer(Proto())
    text = "Café 🍵 tea"
    ids = tokenizer.encode(text)
    assert len(ids) > len(text)  # the é and the emoji are several byte pieces
    pieces = list(_texts(iter(ids), tokenizer, set(), None))
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)
