"""Tiny presets built in-process, saved and loaded through keras-hub's format.

Tests load them with `Config(preset=str(path))`, through the same
`from_preset` path as `gemma_2b_en`, without any network.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import keras
import keras_hub
import sentencepiece
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from keras_ft.preset_files import record_context_length

TINY_CORPUS = [
    "Instruction: How do I boil an egg? Response: 1. Fill a pot with water.",
    "2. Bring the water to a boil. 3. Lower the egg in and wait nine minutes.",
    "user model system assistant The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? Paris is the capital of France.",
    "Explain what a compiler does. A compiler translates source code.",
    "Write a haiku about autumn leaves falling on the quiet river.",
    "Context: numbers 0 1 2 3 4 5 6 7 8 9 and punctuation , . ? ! : ; - ' \"",
]
GEMMA_SPECIALS = ["<start_of_turn>", "<end_of_turn>"]
LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
TINY_BACKBONE = dict(
    num_layers=2,
    num_query_heads=2,
    num_key_value_heads=1,
    hidden_dim=16,
    intermediate_dim=32,
    head_dim=8,
)


def train_tiny_sentencepiece(
    vocab_size: int = 160,
    add_dummy_prefix: bool = False,
    remove_extra_whitespaces: bool = True,
    extra_symbols: tuple[str, ...] = (),
) -> bytes:
    """Trains a small SentencePiece BPE vocabulary in memory (Gemma layout).

    Args:
        vocab_size: number of pieces.
        add_dummy_prefix: put a `▁` before the text, as Llama 2 and Mistral
            vocabularies do (Gemma's do not).
        remove_extra_whitespaces: SentencePiece's default, collapse runs of
            spaces; real Gemma, Llama 2 and Mistral vocabularies keep them
            (False).
        extra_symbols: more pieces SentencePiece matches whole in text, e.g.
            `LLAMA3_SPECIALS` to run the `llama3` template on this vocabulary.
    """
    model = io.BytesIO()
    # Only set when off, so the default vocabulary's bytes stay as they were.
    whitespace = {} if remove_extra_whitespaces else {"remove_extra_whitespaces": False}
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(TINY_CORPUS * 4),
        model_writer=model,
        **whitespace,
        vocab_size=vocab_size,
        model_type="BPE",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        user_defined_symbols=GEMMA_SPECIALS + ["<mask>", "\n", *extra_symbols],
        add_dummy_prefix=add_dummy_prefix,
        byte_fallback=False,
        character_coverage=1.0,
        normalization_rule_name="identity",
        split_digits=True,
        minloglevel=2,
    )
    return model.getvalue()


def make_tiny_preset(
    directory: str | Path,
    architecture: str = "gemma",
    seed: int = 0,
    context_length: int | None = None,
) -> Path:
    """Builds and saves a 2-layer causal LM preset with a tiny vocabulary.

    Args:
        directory: where to write the preset (created).
        architecture: "gemma", "gemma3" or "llama3".
        seed: initialisation seed, so two calls give identical weights.
        context_length: recorded in the preset's metadata.json, as keras_ft
            does for presets converted from GGUF; None records none (as
            keras-hub's own Gemma/Llama presets).

    Returns:
        The preset directory, loadable by `keras_hub.models.CausalLM.from_preset`.
    """
    keras.utils.set_random_seed(seed)
    builders = {"gemma": _tiny_gemma, "gemma3": _tiny_gemma3, "llama3": _tiny_llama3}
    if architecture not in builders:
        raise ValueError(
            f"Unknown tiny architecture {architecture!r}; choose from {sorted(builders)}."
        )
    causal_lm = builders[architecture]()
    directory = Path(directory)
    causal_lm.save_to_preset(str(directory))
    if context_length is not None:
        record_context_length(directory, context_length)
    return directory


def _tiny_gemma():
    tokenizer = keras_hub.models.GemmaTokenizer(proto=train_tiny_sentencepiece())
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), **TINY_BACKBONE
    )
    preprocessor = keras_hub.models.GemmaCausalLMPreprocessor(tokenizer, sequence_length=64)
    return keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=preprocessor)


def _tiny_gemma3():
    tokenizer = keras_hub.models.Gemma3Tokenizer(
        proto=train_tiny_sentencepiece(), has_vision_tokens=False
    )
    backbone = keras_hub.models.Gemma3Backbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        image_size=896,
        use_sliding_window_attention=True,
        sliding_window_size=16,
        **TINY_BACKBONE,
    )
    preprocessor = keras_hub.models.Gemma3CausalLMPreprocessor(
        tokenizer=tokenizer, sequence_length=64
    )
    return keras_hub.models.Gemma3CausalLM(backbone=backbone, preprocessor=preprocessor)


def _tiny_llama3():
    vocabulary, merges = train_tiny_byte_bpe()
    tokenizer = keras_hub.models.Llama3Tokenizer(vocabulary=vocabulary, merges=merges)
    backbone = keras_hub.models.Llama3Backbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_layers=2,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=16,
        intermediate_dim=32,
    )
    preprocessor = keras_hub.models.Llama3CausalLMPreprocessor(tokenizer, sequence_length=64)
    return keras_hub.models.Llama3CausalLM(backbone=backbone, preprocessor=preprocessor)


def train_tiny_byte_bpe(vocab_size: int = 320) -> tuple[dict[str, int], list[str]]:
    """Trains a byte-level BPE (Llama 3 style) in memory: (vocabulary, merges)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=LLAMA3_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TINY_CORPUS * 4, trainer=trainer)
    state = json.loads(tokenizer.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["merges"]]
    return state["vocab"], merges


def make_tiny_absolute_position_backbone(architecture: str = "gpt2", seed: int = 0):
    """A 2-layer GPT-2 or OPT backbone (learned absolute positions), in memory.

    For tests of what keras_ft refuses for such models (e.g. packing).
    """
    classes = {"gpt2": keras_hub.models.GPT2Backbone, "opt": keras_hub.models.OPTBackbone}
    if architecture not in classes:
        raise ValueError(
            f"Unknown tiny architecture {architecture!r}; choose from {sorted(classes)}."
        )
    keras.utils.set_random_seed(seed)
    sizes = {k: TINY_BACKBONE[k] for k in ("num_layers", "hidden_dim", "intermediate_dim")}
    heads = TINY_BACKBONE["num_query_heads"]
    return classes[architecture](
        vocabulary_size=160, num_heads=heads, dropout=0.0, max_sequence_length=64, **sizes
    )
