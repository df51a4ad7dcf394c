"""Examples -> token ids and loss masks, and padded training batches.

The loss mask is built while tokenizing each rendered segment, so every token
knows whether it bears loss from its position, not from a text search.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np

from keras_ft.templates import Example, Message, Segment, Template

# Template-level names for "this model's begin/end of text", whatever the vocab.
GENERIC_SPECIALS = {"<bos>": "start_token_id", "<eos>": "end_token_id"}


class TextTokenizer:
    """A fast, plain-Python view of a keras-hub tokenizer.

    keras-hub tokenizers run through tf.text, which costs a TensorFlow call per
    string. For SentencePiece vocabularies we encode with the `sentencepiece`
    library on the same proto instead (identical ids, far less overhead);
    other tokenizers (e.g. Llama 3's BPE) fall back to the keras-hub layer.

    A SentencePiece vocabulary with a dummy prefix (Llama 2, Mistral) puts a
    `▁` before the text it encodes: right once at the start of a rendered
    example, wrong before every later segment of it. `encode(text,
    continued=True)` encodes a later segment without it.
    """

    def __init__(self, keras_tokenizer):
        self.keras_tokenizer = keras_tokenizer
        self._spm = self._spm_continued = None
        self.dummy_prefix = False
        proto = getattr(keras_tokenizer, "proto", None)
        if proto:
            import sentencepiece
            from sentencepiece import sentencepiece_model_pb2

            self._spm = self._spm_continued = sentencepiece.SentencePieceProcessor(
                model_proto=proto)
            model = sentencepiece_model_pb2.ModelProto()
            model.ParseFromString(proto)
            self.dummy_prefix = model.normalizer_spec.add_dummy_prefix
            if self.dummy_prefix:  # the same vocabulary, minus the prefix
                model.normalizer_spec.add_dummy_prefix = False
                self._spm_continued = sentencepiece.SentencePieceProcessor(
                    model_proto=model.SerializeToString())
        self.pad_id = int(getattr(keras_tokenizer, "pad_token_id", 0) or 0)

    @classmethod
    def from_preset(cls, preset: str) -> "TextTokenizer":
        import keras_hub

        return cls(keras_hub.tokenizers.Tokenizer.from_preset(preset))

    def encode(self, text: str, continued: bool = False) -> list[int]:
        """Token ids of `text`, with no begin/end tokens added.

        Args:
            continued: `text` continues a string whose start was encoded
                already, so it gets no dummy prefix.
        """
        if not text:
            return []
        if self._spm is not None:
            return (self._spm_continued if continued else self._spm).encode(text)
        return [int(t) for t in np.asarray(self.keras_tokenizer.tokenize(text))]

    def prefix_ids(self) -> list[int]:
        """The tokens of a dummy prefix alone (`▁`): [] for most vocabularies."""
        if not self.dummy_prefix:
            return []
        token_id = self._spm.piece_to_id("\u2581")
        return [token_id] if token_id != self._spm.unk_id() else self._spm_continued.encode(" ")

    def decode(self, ids: Sequence[int]) -> str:
        if self._spm is not None:
            return self._spm.decode([int(i) for i in ids])
        return str(self.keras_tokenizer.detokenize(np.asarray(ids, "int32")))

    def display_piece(self, token_id: int) -> str:
        """The text of one token as a person reads it (specials by name)."""
        if self._spm is not None:
            return self._spm.id_to_piece(int(token_id)).replace("\u2581", " ")
        piece = self.keras_tokenizer.id_to_token(int(token_id))
        return piece if piece.startswith("<|") else self.decode([token_id])

    def special_id(self, name: str) -> int:
        """Id of a special token such as `<end_of_turn>`, `<bos>` or `<eos>`."""
        if name in GENERIC_SPECIALS:
            return int(getattr(self.keras_tokenizer, GENERIC_SPECIALS[name]))
        token_id = self._lookup(name)
        if token_id is None:
            raise ValueError(
                f"The tokenizer has no special token {name!r}; the chosen "
                "template does not fit this model's vocabulary. Pick a template "
                "made for it (e.g. `gemma` for Gemma, `llama3` for Llama 3).")
        return token_id

    def _lookup(self, name: str) -> int | None:
        if self._spm is not None:
            token_id = self._spm.piece_to_id(name)
            return None if token_id == self._spm.unk_id() and name != "<unk>" else token_id
        try:
            return int(self.keras_tokenizer.token_to_id(name))
        except (KeyError, ValueError):
            return None

    def fingerprint(self) -> str:
        """A short hash identifying the vocabulary (for token caches)."""
        import hashlib

        h = hashlib.sha256()
        if self._spm is not None:
            h.update(self._spm.serialized_model_proto())
            if self.dummy_prefix:  # caches from before segments lost the prefix
                h.update(b"dummy prefix on the first segment only")
        else:
            for token in self.keras_tokenizer.get_vocabulary():
                h.update(token.encode("utf-8", "surrogatepass") + b"\0")
        return h.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class TokenizedExample:
    token_ids: np.ndarray  # int32 [n]: model input and (shifted) labels
    loss_mask: np.ndarray  # bool [n]: True where the token is a training target
    num_tokens_before_truncation: int

    @property
    def truncated(self) -> bool:
        return self.num_tokens_before_truncation > len(self.token_ids)


def tokenize_example(example: Example, template: Template, tokenizer: TextTokenizer,
                     sequence_length: int, completion_only: bool = True
                     ) -> TokenizedExample | None:
    """Renders and tokenizes one example, truncated to `sequence_length`.

    Returns:
        The tokenized example (sequence_length + 1 tokens at most: inputs and
        labels overlap by one), or None when truncation left no loss token.
    """
    ids: list[int] = []
    mask: list[bool] = []
    segments = template.render(example.messages)
    for segment, piece in zip(segments, encode_segments(segments, tokenizer,
                                                        len(template.begin))):
        ids += piece
        mask += [segment.trainable or not completion_only] * len(piece)
    total = len(ids)
    ids, mask = ids[: sequence_length + 1], mask[: sequence_length + 1]
    mask[0] = False  # the first token is never a prediction target
    if not any(mask):
        return None
    return TokenizedExample(np.asarray(ids, np.int32), np.asarray(mask, bool), total)


def encode_segments(segments: Sequence[Segment], tokenizer: TextTokenizer,
                    num_begin: int = 0) -> list[list[int]]:
    """Token ids of each rendered segment, as the whole rendering tokenizes.

    Each segment is encoded on its own, so every token belongs to one segment
    (and the loss mask follows), but as part of one string: a dummy prefix
    (Llama 2, Mistral) comes once, before the first segment after the
    `num_begin` begin tokens (which the model adds, as keras-hub's
    preprocessors do), not before every segment. Where the segments' joined
    text would not put a token boundary at a segment boundary (a custom
    format ending "A: " before the reply), the boundary wins: a generation
    prompt ends there too.
    """
    out: list[list[int]] = []
    started = False  # has text after the begin tokens been encoded?
    for k, segment in enumerate(segments):
        if segment.special:
            ids = [tokenizer.special_id(segment.text)]
            if k >= num_begin and not started:
                ids = tokenizer.prefix_ids() + ids
        else:
            ids = tokenizer.encode(segment.text, continued=started)
        out.append(ids)
        started = started or (k >= num_begin and bool(ids))
    return out


def prompt_token_ids(messages: Sequence[Message], template: Template,
                     tokenizer: TextTokenizer) -> list[int]:
    """Token ids of a conversation ending on a user turn, ready to generate."""
    segments = template.render_prompt(messages)
    return [i for ids in encode_segments(segments, tokenizer, len(template.begin))
            for i in ids]


def format_marked(tokenized: TokenizedExample, tokenizer: TextTokenizer) -> str:
    """Shows an example token by token; loss-bearing tokens are wrapped in [[ ]]."""
    out = []
    for token_id, trained in zip(tokenized.token_ids, tokenized.loss_mask):
        piece = tokenizer.display_piece(int(token_id))
        out.append(f"[[{piece}]]" if trained else piece)
    return "".join(out)


def bucket_lengths(sequence_length: int, num_buckets: int) -> list[int]:
    """Padded lengths allowed in batches: a few fixed XLA shapes.

    Padding every example to `sequence_length` wastes most of the compute on
    short data (63 % on Dolly at 256); padding to the nearest of a few bucket
    lengths removes most of it while compiling only `num_buckets` shapes.
    """
    step = -(-sequence_length // num_buckets)
    return sorted({min(step * i, sequence_length) for i in range(1, num_buckets + 1)})


def fitted_bucket_lengths(padded_lengths: Sequence[int], num_buckets: int,
                          sequence_length: int, multiple: int = 8) -> list[int]:
    """At most `num_buckets` lengths that minimise padding for these batches.

    `padded_lengths` holds each batch's longest example. Linear buckets
    (`bucket_lengths`) pad Dolly at 256 tokens to 1.32x its real tokens; the
    same number of shapes placed by dynamic programming over the observed
    lengths (rounded up to `multiple`, never past `sequence_length`) pads
    less, with no extra compiles. The longest bucket covers the longest
    batch, so every batch fits.
    """
    rounded = -(-np.asarray(padded_lengths, np.int64) // multiple) * multiple
    values, counts = np.unique(np.minimum(rounded, sequence_length), return_counts=True)
    m, k = len(values), min(num_buckets, len(values))
    # cost[i][j]: padded tokens of batches i..j-1 all padded to values[j-1].
    prefix = np.concatenate([[0], np.cumsum(counts)])
    best = np.full((k + 1, m + 1), np.inf)
    choice = np.zeros((k + 1, m + 1), np.int64)
    best[0, 0] = 0.0
    for used in range(1, k + 1):
        for j in range(1, m + 1):
            for i in range(j):  # the last bucket, values[j-1], covers values[i:j]
                cost = best[used - 1, i] + (prefix[j] - prefix[i]) * values[j - 1]
                if cost < best[used, j]:
                    best[used, j], choice[used, j] = cost, i
    used = int(np.argmin(best[1:, m])) + 1
    buckets, j = [], m
    while j > 0:
        buckets.append(int(values[j - 1]))
        j, used = int(choice[used, j]), used - 1
    return sorted(buckets)


def make_batch(examples: Sequence[TokenizedExample], buckets: Sequence[int],
               pad_id: int) -> tuple[dict, None, None]:
    """Pads examples into one batch shaped for `CausalLMTrainer`, one per row.

    Returns:
        (x, None, None) for keras `fit`: x holds `token_ids`, `padding_mask`,
        `labels` (next tokens) and `loss_weights` (1 where loss is taken).
    """
    return make_packed_batch([[e] for e in examples], buckets, pad_id, segments=False)


def make_packed_batch(rows: Sequence[Sequence[TokenizedExample]], buckets: Sequence[int],
                      pad_id: int, segments: bool = True) -> tuple[dict, None, None]:
    """Pads rows of examples laid end to end (`pack_rows`) into one batch.

    Each example is shifted on its own (its labels are its next tokens), so no
    label crosses into the next example. With `segments`, x also holds
    `segment_ids` (1, 2, ... per example of a row, 0 on padding), from which
    the trainer builds a block-diagonal causal mask.
    """
    longest = max(sum(len(e.token_ids) - 1 for e in row) for row in rows)
    length = next(b for b in buckets if b >= longest)
    ids = np.full((len(rows), length), pad_id, np.int32)
    labels = np.full((len(rows), length), pad_id, np.int32)
    weights = np.zeros((len(rows), length), np.float32)
    segment_ids = np.zeros((len(rows), length), np.int32)
    for r, row in enumerate(rows):
        start = 0
        for s, example in enumerate(row, start=1):
            end = start + len(example.token_ids) - 1
            ids[r, start:end], labels[r, start:end] = example.token_ids[:-1], example.token_ids[1:]
            weights[r, start:end], segment_ids[r, start:end] = example.loss_mask[1:], s
            start = end
    x = {"token_ids": ids, "padding_mask": segment_ids > 0, "labels": labels,
         "loss_weights": weights}
    if segments:
        x["segment_ids"] = segment_ids
    return x, None, None


def pack_rows(lengths: Sequence[int], row_length: int, seed: int) -> list[np.ndarray]:
    """Groups examples into rows of at most `row_length` tokens (best fit).

    Examples are taken in a seeded random order; each goes to the open row
    with the least room that still fits it, else starts a row. On Dolly at
    256 tokens this leaves a few percent of padding where one example per row
    (even bucketed) leaves ~28 %. Rows are fixed for the run; the batch order
    of rows is reshuffled per epoch by `BatchSequence`.

    Returns:
        Rows of example indices, in order of creation.
    """
    lengths = np.asarray(lengths, np.int64)
    if lengths.size and lengths.max() > row_length:
        raise ValueError(f"An example of {lengths.max()} tokens does not fit a packed row "
                         f"of {row_length}.")
    rows: list[list[int]] = []
    # open_rows[room]: rows with exactly `room` tokens left (a best-fit index)
    open_rows: list[list[int]] = [[] for _ in range(row_length + 1)]
    for i in np.random.default_rng([seed, 1]).permutation(len(lengths)):
        n = int(lengths[i])
        room = next((r for r in range(n, row_length + 1) if open_rows[r]), None)
        if room is None:  # no partly filled row fits it: start one
            row, room = len(rows), row_length
            rows.append([])
        else:
            row = open_rows[room].pop()
        rows[row].append(int(i))
        if room - n:
            open_rows[room - n].append(row)
    return [np.asarray(r, np.int64) for r in rows]


def count_tokens(examples: Iterable[TokenizedExample]) -> tuple[int, int]:
    """Returns (real tokens, loss-bearing tokens) over examples."""
    real = loss = 0
    for e in examples:
        real += len(e.token_ids) - 1
        loss += int(e.loss_mask.sum())
    return real, loss
