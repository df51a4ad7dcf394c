import numpy as np
import pytest

from keras_ft.templates import Example, Message, get_template
from keras_ft.tokens import (TextTokenizer, bucket_lengths, format_marked, make_batch,
                             tokenize_example)

THREE_TURNS = Example((
    Message("user", "How do I boil an egg?"), Message("assistant", "1. Fill a pot."),
    Message("user", "And then?"), Message("assistant", "2. Bring the water to a boil."),
    Message("user", "Done?"), Message("assistant", "3. Lower the egg in.")))


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
    tokenized = tokenize_example(THREE_TURNS, get_template("gemma"), tokenizer, 256,
                                 completion_only=False)
    assert tokenized.loss_mask[1:].all() and not tokenized.loss_mask[0]


def test_truncation_is_counted_and_fully_truncated_is_dropped(tokenizer):
    template = get_template("instruction")
    long_prompt = Example((Message("user", "word " * 200), Message("assistant", "ok")))
    assert tokenize_example(long_prompt, template, tokenizer, 32) is None
    long_reply = Example((Message("user", "Hi"), Message("assistant", "word " * 200)))
    tokenized = tokenize_example(long_reply, template, tokenizer, 32)
    assert len(tokenized.token_ids) == 33 and tokenized.truncated


def test_format_marked_shows_loss_tokens(tokenizer):
    example = Example((Message("user", "Hi"), Message("assistant", "ok")))
    text = format_marked(tokenize_example(example, get_template("instruction"), tokenizer,
                                          64), tokenizer)
    assert text.startswith("<bos>Instruction:") and text.endswith("[[<eos>]]")
    assert "[[Hi]]" not in text


def test_llama3_specials_resolve_in_a_bpe_vocabulary(tiny_llama3):
    tokenizer = TextTokenizer.from_preset(str(tiny_llama3))
    tokenized = tokenize_example(THREE_TURNS, get_template("llama3"), tokenizer, 512)
    eot = tokenizer.special_id("<|eot_id|>")
    assert tokenized.token_ids[0] == tokenizer.special_id("<bos>")
    assert sum(int(i) == eot and m for i, m in zip(tokenized.token_ids,
                                                   tokenized.loss_mask)) == 3


def test_gemma_template_refused_for_a_vocabulary_without_its_tokens(tiny_llama3):
    tokenizer = TextTokenizer.from_preset(str(tiny_llama3))
    with pytest.raises(ValueError, match="no special token '<start_of_turn>'"):
        tokenize_example(THREE_TURNS, get_template("gemma"), tokenizer, 64)


def test_buckets_and_batches(tokenizer):
    assert bucket_lengths(256, 4) == [64, 128, 192, 256]
    assert bucket_lengths(256, 1) == [256]
    template = get_template("instruction")
    examples = [tokenize_example(Example((Message("user", "Hi " * n),
                                          Message("assistant", "ok"))), template, tokenizer, 256)
                for n in (1, 30)]
    x, y, w = make_batch(examples, bucket_lengths(256, 4), tokenizer.pad_id)
    longest = max(len(e.token_ids) for e in examples) - 1
    assert x["token_ids"].shape[1] == next(b for b in (64, 128, 192, 256) if b >= longest)
    assert y is None and w is None
    first = examples[0]
    n = len(first.token_ids)
    np.testing.assert_array_equal(x["labels"][0, : n - 1], first.token_ids[1:])
    np.testing.assert_array_equal(x["loss_weights"][0, : n - 1], first.loss_mask[1:])
    # n - 1 input positions: the last token is only a label.
    assert x["padding_mask"][0, :n - 1].all() and not x["padding_mask"][0, n - 1:].any()
    assert x["loss_weights"][0, n - 1:].sum() == 0
