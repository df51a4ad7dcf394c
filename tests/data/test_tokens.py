import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_ft.data.batches import bucket_lengths, make_batch
from keras_ft.data.tokenizer import TextTokenizer, format_marked, prompt_token_ids, tokenize_example
from keras_ft.templates import Example, Message, get_template

THREE_TURNS = Example(
    (
        Message("user", "How do I boil an egg?"),
        Message("assistant", "1. Fill a pot."),
        Message("user", "And then?"),
        Message("assistant", "2. Bring the water to a boil."),
        Message("user", "Done?"),
        Message("assistant", "3. Lower the egg in."),
    )
)


@pytest.fixture(scope="module")
def tokenizer(tiny_gemma):
    return TextTokenizer.from_preset(str(tiny_gemma))


def test_loss_mask_covers_exactly_the_assistant_turns(tokenizer):
    tokenized = tokenize_example(THREE_TURNS, get_template("gemma"), tokenizer, 256)
    ids, mask = tokenized.token_ids, tokenized.loss_mask
    trained = tokenizer.decode([i for i, m in zip(ids, mask) if m and i >= 0])
    end = tokenizer.special_id("<end_of_turn>")
    # every assistant reply and its end-of-turn, nothing of the user turns
    expected = []
    for reply in ("1. Fill a pot.", "2. Bring the water to a boil.", "3. Lower the egg in."):
        expected += tokenizer.encode(reply) + [end]
    assert [int(i) for i, m in zip(ids, mask) if m] == expected
    assert "egg?" not in trained and "And then" not in trained
    # the user's end-of-turn tokens are not trained
    user_ends = [k for k, i in enumerate(ids) if i == end and not mask[k]]
    assert len(user_ends) == 3


def test_full_sequence_loss_when_completion_only_is_off(tokenizer):
    tokenized = tokenize_example(
        THREE_TURNS, get_template("gemma"), tokenizer, 256, completion_only=False
    )
    assert tokenized.loss_mask[1:].all() and not tokenized.loss_mask[0]


def test_truncation_is_counted_and_fully_truncated_is_dropped(tokenizer):
    template = get_template("instruction")
    long_prompt = Example((Message("user", "word " * 200), Message("assistant", "ok")))
    assert tokenize_example(long_prompt, template, tokenizer, 32) is None
    long_reply = Example((Message("user", "Hi"), Message("assistant", "word " * 200)))
    tokenized = tokenize_example(long_reply, template, tokenizer, 32)
    assert len(tokenized.token_ids) == 33 and tokenized.num_tokens_before_truncation > 33


def test_format_marked_shows_loss_tokens(tokenizer):
    example = Example((Message("user", "Hi"), Message("assistant", "ok")))
    text = format_marked(
        tokenize_example(example, get_template("instruction"), tokenizer, 64), tokenizer
    )
    assert text.startswith("<bos>Instruction:") and text.endswith("[[<eos>]]")
    assert "[[Hi]]" not in text


def test_llama3_specials_resolve_in_a_bpe_vocabulary(tiny_llama3):
    tokenizer = TextTokenizer.from_preset(str(tiny_llama3))
    tokenized = tokenize_example(THREE_TURNS, get_template("llama3"), tokenizer, 512)
    eot = tokenizer.special_id("<|eot_id|>")
    assert tokenized.token_ids[0] == tokenizer.special_id("<bos>")
    assert sum(int(i) == eot and m for i, m in zip(tokenized.token_ids, tokenized.loss_mask)) == 3


def test_gemma_template_refused_for_a_vocabulary_without_its_tokens(tiny_llama3):
    tokenizer = TextTokenizer.from_preset(str(tiny_llama3))
    with pytest.raises(ValueError, match="no special token '<start_of_turn>'"):
        tokenize_example(THREE_TURNS, get_template("gemma"), tokenizer, 64)


def test_buckets_and_batches(tokenizer):
    assert bucket_lengths(256, 4) == [64, 128, 192, 256]
    assert bucket_lengths(256, 1) == [256]
    template = get_template("instruction")
    examples = [
        tokenize_example(
            Example((Message("user", "Hi " * n), Message("assistant", "ok"))),
            template,
            tokenizer,
            256,
        )
        for n in (1, 30)
    ]
    x, y, w = make_batch(examples, bucket_lengths(256, 4), tokenizer.pad_id)
    longest = max(len(e.token_ids) for e in examples) - 1
    assert x["token_ids"].shape[1] == next(b for b in (64, 128, 192, 256) if b >= longest)
    assert y is None and w is None
    first = examples[0]
    n = len(first.token_ids)
    np.testing.assert_array_equal(x["labels"][0, : n - 1], first.token_ids[1:])
    np.testing.assert_array_equal(x["loss_weights"][0, : n - 1], first.loss_mask[1:])
    # n - 1 input positions: the last token is only a label.
    assert x["padding_mask"][0, : n - 1].all() and not x["padding_mask"][0, n - 1 :].any()
    assert x["loss_weights"][0, n - 1 :].sum() == 0


# ------------------------------------------- segment-wise = whole-string ids

LLAMA3_SPECIALS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
)
TEMPLATE_NAMES = (
    "instruction",
    "gemma",
    "llama3",
    "Context: {prompt}\nResponse:\n{response}",
    "{prompt}\n\nWrite\n{response}",
)
TEXT = st.text(alphabet="abcdefghiklmnoprstuwyHIW 0123456789.,?!\n", max_size=24)


def _vocabulary(dummy_prefix: bool):
    """A keras-hub tokenizer over a tiny vocabulary that keeps whitespace
    (as Gemma, Llama 2 and Mistral do), and a reference SentencePiece that
    encodes a whole rendered string at once, every special matched in text."""
    import keras_hub
    import sentencepiece
    from sentencepiece import sentencepiece_model_pb2

    from keras_ft.testing import train_tiny_sentencepiece

    proto = train_tiny_sentencepiece(
        vocab_size=200,
        add_dummy_prefix=dummy_prefix,
        remove_extra_whitespaces=False,
        extra_symbols=LLAMA3_SPECIALS,
    )
    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(proto)
    assert model.normalizer_spec.add_dummy_prefix == dummy_prefix
    for piece in model.pieces:  # <bos>, <eos>, <pad>: matched in text as well
        if piece.type == piece.CONTROL:
            piece.type = piece.USER_DEFINED
    model.trainer_spec.bos_id = model.trainer_spec.eos_id = model.trainer_spec.pad_id = -1
    reference = sentencepiece.SentencePieceProcessor(model_proto=model.SerializeToString())
    return TextTokenizer(keras_hub.models.GemmaTokenizer(proto=proto)), reference


@pytest.fixture(scope="module", params=[True, False], ids=["dummy_prefix", "no_prefix"])
def vocabulary(request):
    return _vocabulary(request.param)


@st.composite
def chats(draw):
    messages = []
    if draw(st.booleans()):
        messages.append(Message("system", draw(TEXT)))
    for _ in range(draw(st.integers(1, 3))):
        messages += [Message("user", draw(TEXT)) for _ in range(draw(st.integers(1, 2)))]
        messages.append(Message("assistant", draw(TEXT)))
    return messages


def _natural(segments, template, reference):
    """The begin tokens (added by the model), then the rest of the rendered
    string tokenized at once."""
    begin = [reference.piece_to_id(s.text) for s in segments[: len(template.begin)]]
    return begin + reference.encode("".join(s.text for s in segments[len(template.begin) :]))


def _text_of(ids, reference):
    return "".join(reference.id_to_piece(int(i)).replace("\u2581", " ") for i in ids)


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
@settings(max_examples=40, deadline=None)
@given(messages=chats())
def test_ids_are_the_whole_rendered_string_tokenized_and_mask_the_replies(
    vocabulary, name, messages
):
    tokenizer, reference = vocabulary
    template = get_template(name)
    segments = template.render(messages)
    tokenized = tokenize_example(Example(tuple(messages)), template, tokenizer, 10_000)
    assert tokenized.token_ids.tolist() == _natural(segments, template, reference)
    # The loss mask: exactly the replies and their end tokens, nothing else.
    ids, mask = tokenized.token_ids, tokenized.loss_mask
    trained = "".join(s.text for s in segments if s.trainable)
    prefix = " " if tokenizer.dummy_prefix else ""
    begin = "".join(s.text for s in segments[: len(template.begin)])
    untrained = (
        begin + prefix + "".join(s.text for s in segments[len(template.begin) :] if not s.trainable)
    )
    assert _text_of(ids[mask], reference) == trained
    assert _text_of(ids[~mask], reference) == untrained


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
@settings(max_examples=25, deadline=None)
@given(messages=chats())
def test_generation_prompt_ids_are_the_rendered_prompt_tokenized(vocabulary, name, messages):
    tokenizer, reference = vocabulary
    template = get_template(name)
    prompt = messages[:-1]
    assert prompt_token_ids(prompt, template, tokenizer) == _natural(
        template.render_prompt(prompt), template, reference
    )


def test_dummy_prefix_comes_once_at_the_start():
    tokenizer, reference = _vocabulary(dummy_prefix=True)
    chat = Example(
        (
            Message("user", "Hi"),
            Message("assistant", "ok"),
            Message("user", "Why?"),
            Message("assistant", "fox"),
        )
    )
    ids = tokenize_example(chat, get_template("instruction"), tokenizer, 256).token_ids
    pieces = [reference.id_to_piece(int(i)) for i in ids]
    assert pieces[0] == "<bos>" and pieces[1].startswith("\u2581")
    assert sum(p.startswith("\u2581") for p in pieces) == 1, pieces
