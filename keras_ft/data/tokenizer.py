"""Examples -> token ids and loss masks.

The loss mask is built while tokenizing each rendered segment, so every token
knows whether it bears loss from its position, not from a text search.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Sequence

import numpy as np
import sentencepiece
from sentencepiece import sentencepiece_model_pb2

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
            self._spm = self._spm_continued = sentencepiece.SentencePieceProcessor(
                model_proto=proto
            )
            model = sentencepiece_model_pb2.ModelProto()
            model.ParseFromString(proto)
            self.dummy_prefix = model.normalizer_spec.add_dummy_prefix
            if self.dummy_prefix:  # the same vocabulary, minus the prefix
                model.normalizer_spec.add_dummy_prefix = False
                self._spm_continued = sentencepiece.SentencePieceProcessor(
                    model_proto=model.SerializeToString()
                )
        self.pad_id = int(getattr(keras_tokenizer, "pad_token_id", 0) or 0)

    @classmethod
    def from_preset(cls, preset: str) -> "TextTokenizer":
        import keras_hub  # heavy: keras_hub (and tensorflow)

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
                "made for it (e.g. `gemma` for Gemma, `llama3` for Llama 3)."
            )
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
    num_tokens_before_truncation: int  # more than n when truncation cut it


def tokenize_example(
    example: Example,
    template: Template,
    tokenizer: TextTokenizer,
    sequence_length: int,
    completion_only: bool = True,
) -> TokenizedExample | None:
    """Renders and tokenizes one example, truncated to `sequence_length`.

    Returns:
        The tokenized example (sequence_length + 1 tokens at most: inputs and
        labels overlap by one), or None when truncation left no loss token.
    """
    ids: list[int] = []
    mask: list[bool] = []
    segments = template.render(example.messages)
    for segment, piece in zip(segments, encode_segments(segments, tokenizer, len(template.begin))):
        ids += piece
        mask += [segment.trainable or not completion_only] * len(piece)
    total = len(ids)
    ids, mask = ids[: sequence_length + 1], mask[: sequence_length + 1]
    mask[0] = False  # the first token is never a prediction target
    if not any(mask):
        return None
    return TokenizedExample(np.asarray(ids, np.int32), np.asarray(mask, bool), total)


def encode_segments(
    segments: Sequence[Segment], tokenizer: TextTokenizer, num_begin: int = 0
) -> list[list[int]]:
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


def prompt_token_ids(
    messages: Sequence[Message], template: Template, tokenizer: TextTokenizer
) -> list[int]:
    """Token ids of a conversation ending on a user turn, ready to generate."""
    segments = template.render_prompt(messages)
    return [i for ids in encode_segments(segments, tokenizer, len(template.begin)) for i in ids]


def format_marked(tokenized: TokenizedExample, tokenizer: TextTokenizer) -> str:
    """Shows an example token by token; loss-bearing tokens are wrapped in [[ ]]."""
    out = []
    for token_id, trained in zip(tokenized.token_ids, tokenized.loss_mask):
        piece = tokenizer.display_piece(int(token_id))
        out.append(f"[[{piece}]]" if trained else piece)
    return "".join(out)
