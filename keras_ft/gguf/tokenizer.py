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

Llama 3's byte-level BPE is stored as llama.cpp's `gpt2` tokenizer model:
the token strings in the byte alphabet, their types (added tokens that look
special CONTROL, as llama.cpp's `does_token_look_special`), the merges, and
the pre-tokenizer `llama-bpe`; `build_gguf_bpe_vocab` and
`read_gguf_bpe_vocab` / `keras_bpe_arguments` are its two directions.
"""

import dataclasses
import re
from collections.abc import Iterable, Mapping
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
        The serialized `ModelProto` (BPE, byte fallback where the vocabulary
        has byte pieces, identity normalizer, no dummy prefix, whitespace kept).

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
    # Only a vocabulary with the 256 byte pieces can fall back on them
    # (SentencePiece refuses the model otherwise); Gemma's has them.
    trainer.byte_fallback = vocab.token_types.count(BYTE) == 256
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


@dataclasses.dataclass(frozen=True)
class GGUFBytePairVocab:
    """A byte-level BPE tokenizer as GGUF stores it (`tokenizer.ggml.model` gpt2).

    Attributes:
        tokens: Token strings (byte alphabet), indexed by id; ids the
            vocabulary lacks are `[PAD<id>]` (UNUSED), as llama.cpp fills them.
        token_types: GGUF token types (`NORMAL`, `CONTROL`, `UNUSED`).
        merges: BPE merges, `"left right"`, in priority order.
        bos_id: Id of the beginning-of-sequence token.
        eos_id: Id of the end-of-sequence token.
        pre: llama.cpp's pre-tokenizer name (`tokenizer.ggml.pre`).
    """

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int
    eos_id: int
    pre: str = "llama-bpe"


# keras-hub's Llama 3 loader leaves these out of the special tokens it
# matches in text (they stay ordinary vocabulary entries there).
_RESERVED = "<|reserved_special_token_"


def build_gguf_bpe_vocab(
    vocabulary: Mapping[str, int],
    merges: Iterable[str],
    special_tokens: Iterable[str],
    bos_token: str,
    eos_token: str,
    size: int | None = None,
) -> GGUFBytePairVocab:
    """A keras-hub BytePairTokenizer's vocabulary as llama.cpp's `gpt2` arrays.

    Args:
        vocabulary: Token -> id (keras-hub's `BytePairTokenizer.vocabulary`).
        merges: Its merges.
        special_tokens: Tokens it matches whole in text: CONTROL in GGUF.
        bos_token: The start token.
        eos_token: The end token.
        size: The model's vocabulary size (the embedding's rows), if larger.
    """
    by_id = {int(i): token for token, i in vocabulary.items()}
    size = max(size or 0, max(by_id) + 1)
    special = set(special_tokens)
    tokens, types = [], []
    for i in range(size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        tokens.append(token)
        special_looking = token in special or _SPECIAL_TEXT.fullmatch(token)
        types.append(CONTROL if special_looking else NORMAL)
    return GGUFBytePairVocab(
        tokens=tokens,
        token_types=types,
        merges=list(merges),
        bos_id=vocabulary[bos_token],
        eos_id=vocabulary[eos_token],
    )


def read_gguf_bpe_vocab(reader: "gguf.GGUFReader") -> GGUFBytePairVocab:
    """Reads a byte-level BPE (`tokenizer.ggml.model` gpt2) from an open GGUF file.

    Raises:
        ValueError: If the file's tokenizer is another model, or lacks a field.
    """
    model = _field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(
            "Only byte-level BPE tokenizers (tokenizer.ggml.model='gpt2') can be "
            f"converted for this architecture. Received: tokenizer.ggml.model={model!r}"
        )
    pre = reader.fields.get("tokenizer.ggml.pre")
    return GGUFBytePairVocab(
        tokens=list(_field(reader, "tokenizer.ggml.tokens")),
        token_types=[int(t) for t in _field(reader, "tokenizer.ggml.token_type")],
        merges=list(_field(reader, "tokenizer.ggml.merges")),
        bos_id=int(_field(reader, "tokenizer.ggml.bos_token_id")),
        eos_id=int(_field(reader, "tokenizer.ggml.eos_token_id")),
        pre=pre.contents() if pre is not None else "default",
    )


def keras_bpe_arguments(vocab: GGUFBytePairVocab) -> dict:
    """keras-hub `Llama3Tokenizer(**kwargs)` arguments for a GGUF BPE vocabulary.

    CONTROL tokens become special tokens (matched whole in text) except
    `<|reserved_special_token_N|>`, as keras-hub's own Llama 3 loader does;
    llama.cpp's `[PAD<id>]` fillers are left out.

    Raises:
        ValueError: If the arrays differ in length.
    """
    if len(vocab.tokens) != len(vocab.token_types):
        raise ValueError(
            "GGUF tokenizer arrays must have equal lengths. Received: "
            f"tokens={len(vocab.tokens)}, token_type={len(vocab.token_types)}"
        )
    bos, eos = vocab.tokens[vocab.bos_id], vocab.tokens[vocab.eos_id]
    kept = [(i, t, k) for i, (t, k) in enumerate(zip(vocab.tokens, vocab.token_types))]
    return {
        "vocabulary": {token: i for i, token, kind in kept if kind != UNUSED},
        "merges": list(vocab.merges),
        "bos_token": bos,
        "eos_token": eos,
        "misc_special_tokens": {
            token
            for _, token, kind in kept
            if kind == CONTROL and token not in (bos, eos) and not token.startswith(_RESERVED)
        },
    }
