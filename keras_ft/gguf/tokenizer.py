"""SentencePiece <-> GGUF vocabulary conversion for Gemma-style tokenizers.

llama.cpp's `convert_hf_to_gguf.py` flattens a SentencePiece model into three
parallel GGUF arrays (`tokenizer.ggml.tokens`, `.scores`, `.token_type`) and
changes two things on the way:

* every added token that Hugging Face marks `special` (Gemma: `<pad>`, `<eos>`,
  `<bos>`, `<unk>`, `<mask>`, `<unusedN>`, `<start_of_turn>`, `<end_of_turn>`)
  becomes CONTROL, including `<unk>`;
* the other added tokens become USER_DEFINED with `▁` replaced by a raw space
  (the whitespace-run pieces `"  "`, `"   "`, ...).

`build_sentencepiece_proto` undoes both, so that SentencePiece (and therefore
keras-hub's tokenizer) segments text the way llama.cpp does with
`parse_special=True`: `<start_of_turn>` in text is one token. One deliberate
difference: `<bos>`, `<eos>`, `<pad>` stay CONTROL and `<unk>` UNKNOWN, which
SentencePiece never matches in text (llama.cpp would), so a literal "<eos>"
in training data cannot end a sequence. `build_gguf_vocab` is the inverse
used by the exporter.
"""

import dataclasses
import re
from typing import TYPE_CHECKING

from sentencepiece import sentencepiece_model_pb2 as sp_pb2

if TYPE_CHECKING:
    import gguf

_PIECE = sp_pb2.ModelProto.SentencePiece
SPACE_SYMBOL = "\u2581"  # "▁", SentencePiece's escaped space.

# GGUF token types (llama.cpp `llama_token_type`); the same numbers as
# SentencePiece's piece types.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Added tokens that llama.cpp stores as CONTROL although SentencePiece must
# match them inside text (chat markers and reserved slots); mirrors
# `does_token_look_special` plus the Gemma turn markers.
_SPECIAL_TEXT = re.compile(r"<start_of_turn>|<end_of_turn>|<mask>|<unused\d+>|<\|.*\|>|\[@BOS@\]")


@dataclasses.dataclass(frozen=True)
class GGUFVocab:
    """The tokenizer part of a GGUF file.

    Attributes:
        tokens: Token strings, indexed by id.
        scores: SentencePiece scores (merge priority for BPE).
        token_types: GGUF token types (`NORMAL`, `CONTROL`, ...).
        bos_id: Id of the beginning-of-sequence token.
        eos_id: Id of the end-of-sequence token.
        unk_id: Id of the unknown token.
        pad_id: Id of the padding token.
    """

    tokens: list[str]
    scores: list[float]
    token_types: list[int]
    bos_id: int
    eos_id: int
    unk_id: int
    pad_id: int


def build_sentencepiece_proto(vocab: GGUFVocab) -> bytes:
    """Rebuilds a serialized SentencePiece BPE model from a GGUF vocabulary.

    Args:
        vocab: The GGUF tokenizer arrays and special ids.

    Returns:
        The serialized `ModelProto` (BPE, byte fallback, identity normalizer,
        no dummy prefix, whitespace kept).

    Raises:
        ValueError: If the arrays differ in length or a token type is unknown.
    """
    num = len(vocab.tokens)
    if not num == len(vocab.scores) == len(vocab.token_types):
        raise ValueError(
            "GGUF tokenizer arrays must have equal lengths. Received: "
            f"tokens={num}, scores={len(vocab.scores)}, "
            f"token_type={len(vocab.token_types)}"
        )
    model = sp_pb2.ModelProto()
    control_ids = {vocab.bos_id, vocab.eos_id, vocab.pad_id}
    for token_id, (text, score, gguf_type) in enumerate(
        zip(vocab.tokens, vocab.scores, vocab.token_types)
    ):
        piece = model.pieces.add()
        piece.piece, piece.score = text, float(score)
        if token_id == vocab.unk_id:
            piece.type = _PIECE.UNKNOWN
        elif token_id in control_ids:
            piece.type = _PIECE.CONTROL
        elif gguf_type in (CONTROL, USER_DEFINED):
            # SentencePiece never matches CONTROL pieces in text; llama.cpp
            # (parse_special=True) does, so they become USER_DEFINED here.
            piece.type = _PIECE.USER_DEFINED
            piece.piece = text.replace(" ", SPACE_SYMBOL)
        elif gguf_type in (NORMAL, BYTE, UNUSED, UNKNOWN):
            piece.type = gguf_type
        else:
            raise ValueError(
                f"Unknown GGUF token type for token {token_id} ({text!r}). "
                f"Expected one of 1..6. Received: token_type={gguf_type}"
            )
    _fill_specs(model, vocab)
    return model.SerializeToString()


def _fill_specs(model: sp_pb2.ModelProto, vocab: GGUFVocab) -> None:
    trainer = model.trainer_spec
    trainer.model_type = sp_pb2.TrainerSpec.BPE
    trainer.vocab_size = len(vocab.tokens)
    trainer.byte_fallback = True
    trainer.unk_id, trainer.unk_piece = vocab.unk_id, vocab.tokens[vocab.unk_id]
    trainer.bos_id, trainer.bos_piece = vocab.bos_id, vocab.tokens[vocab.bos_id]
    trainer.eos_id, trainer.eos_piece = vocab.eos_id, vocab.tokens[vocab.eos_id]
    trainer.pad_id, trainer.pad_piece = vocab.pad_id, vocab.tokens[vocab.pad_id]
    for spec in (model.normalizer_spec, model.denormalizer_spec):
        spec.name = "identity"
        spec.add_dummy_prefix = False
        spec.remove_extra_whitespaces = False
        spec.escape_whitespaces = True


def build_gguf_vocab(proto: bytes) -> GGUFVocab:
    """Flattens a serialized SentencePiece model the way llama.cpp does.

    The inverse of `build_sentencepiece_proto`: for a Gemma vocabulary,
    `build_gguf_vocab(build_sentencepiece_proto(v)) == v`.

    Args:
        proto: A serialized SentencePiece `ModelProto`.

    Returns:
        The GGUF tokenizer arrays and special ids.
    """
    model = sp_pb2.ModelProto()
    model.ParseFromString(proto)
    tokens, scores, types = [], [], []
    for piece in model.pieces:
        text, gguf_type = piece.piece, int(piece.type)
        if gguf_type in (_PIECE.UNKNOWN, _PIECE.CONTROL):
            gguf_type = CONTROL
        elif gguf_type == _PIECE.USER_DEFINED:
            if _SPECIAL_TEXT.fullmatch(text):
                gguf_type = CONTROL
            else:
                text = text.replace(SPACE_SYMBOL, " ")
        tokens.append(text)
        scores.append(piece.score)
        types.append(gguf_type)
    ids = {p.piece: i for i, p in enumerate(model.pieces)}
    trainer = model.trainer_spec
    return GGUFVocab(
        tokens=tokens,
        scores=scores,
        token_types=types,
        bos_id=ids.get(trainer.bos_piece, trainer.bos_id),
        eos_id=ids.get(trainer.eos_piece, trainer.eos_id),
        unk_id=ids.get(trainer.unk_piece, trainer.unk_id),
        pad_id=ids.get(trainer.pad_piece, trainer.pad_id),
    )


def read_gguf_vocab(reader: "gguf.GGUFReader") -> GGUFVocab:
    """Reads the tokenizer arrays and special ids of an open GGUF file.

    Args:
        reader: A `gguf.GGUFReader` over the file.

    Returns:
        The GGUF tokenizer arrays and special ids.

    Raises:
        ValueError: If the file has no SentencePiece-style (`llama`) tokenizer.
    """
    model = _field(reader, "tokenizer.ggml.model")
    if model != "llama":
        raise ValueError(
            "Only SentencePiece tokenizers (tokenizer.ggml.model='llama') can "
            f"be converted. Received: tokenizer.ggml.model={model!r}"
        )
    tokens_field = reader.fields["tokenizer.ggml.tokens"]
    tokens = [bytes(tokens_field.parts[i]).decode("utf-8") for i in tokens_field.data]
    return GGUFVocab(
        tokens=tokens,
        scores=[float(s) for s in _field(reader, "tokenizer.ggml.scores")],
        token_types=[int(t) for t in _field(reader, "tokenizer.ggml.token_type")],
        bos_id=int(_field(reader, "tokenizer.ggml.bos_token_id")),
        eos_id=int(_field(reader, "tokenizer.ggml.eos_token_id")),
        unk_id=int(_field(reader, "tokenizer.ggml.unknown_token_id")),
        pad_id=int(_field(reader, "tokenizer.ggml.padding_token_id")),
    )


def _field(reader: "gguf.GGUFReader", key: str):
    if key not in reader.fields:
        raise ValueError(f"The GGUF file has no `{key}` metadata field.")
    return reader.fields[key].contents()
