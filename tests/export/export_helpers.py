"""Shared by the export tests: tuned adapters (one per architecture, made
once by the fixtures of conftest.py), logits in keras and in torch.

Each adapter is the tiny preset with LoRA on every target layer (rank 2,
alpha 8, so the scale 4 is not 1) set to random non-zero factors: keras-hub
zero-initializes LoRA's B, and an adapter that changes nothing would make
every logits comparison pass trivially. `Tuned.changes` proves it changes the
logits. Saved with keras_ft's `save_adapter`, as a run saves it.
"""

import dataclasses
from pathlib import Path

import keras
import keras_hub
import numpy as np
import torch
import transformers

from keras_ft.config import Config
from keras_ft.model.causal_lm import load_causal_lm
from keras_ft.model.lora import enable_lora, save_adapter
from keras_ft.testing import TINY_BACKBONE, train_tiny_sentencepiece

# Ids below every tiny vocabulary (160 pieces; 320 for Llama 3).
TOKEN_IDS = np.array([[2, 5, 40, 41, 90, 91, 120, 7, 130, 60, 61, 150]], np.int32)
TEMPLATES = {"gemma": "gemma", "gemma3": "gemma", "llama3": "llama3"}


def keras_logits(causal_lm) -> np.ndarray:
    inputs = {"token_ids": TOKEN_IDS, "padding_mask": np.ones_like(TOKEN_IDS, bool)}
    values = np.asarray(causal_lm(inputs), np.float32)
    assert np.isfinite(values).all()
    return values


@dataclasses.dataclass
class Tuned:
    preset: Path  # the tiny base preset
    adapter: Path  # a directory holding adapter.lora.h5 + adapter_config.json
    template: str
    base_logits: np.ndarray  # the base, no adapter
    logits: np.ndarray  # the base with the adapter, in memory

    def changes(self) -> float:
        return float(np.abs(self.logits - self.base_logits).max())


def make_tuned(preset: Path, root: Path, architecture: str) -> Tuned:
    causal_lm = load_causal_lm(str(preset))
    base = keras_logits(causal_lm)
    enable_lora(causal_lm.backbone, rank=2, alpha=8.0, targets="all")
    rng = np.random.default_rng(0)
    for weight in causal_lm.backbone.trainable_weights:
        weight.assign(rng.normal(0.0, 0.3, weight.shape).astype(np.float32))
    cfg = Config(
        preset=str(preset),
        template=TEMPLATES[architecture],
        lora_rank=2,
        lora_alpha=8.0,
        lora_targets="all",
    )
    save_adapter(causal_lm, root, cfg)
    return Tuned(preset, root, cfg.template, base, keras_logits(causal_lm))


def make_full_gemma3(directory: Path) -> Path:
    """The tiny Gemma 3 with its post-attention and post-FFW norms on, as every
    real Gemma 3 (and transformers' Gemma3 model) has them; `tiny_gemma3`
    has them off, which transformers cannot express."""
    keras.utils.set_random_seed(0)
    tokenizer = keras_hub.models.Gemma3Tokenizer(
        proto=train_tiny_sentencepiece(), has_vision_tokens=False
    )
    backbone = keras_hub.models.Gemma3Backbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        image_size=896,
        use_sliding_window_attention=True,
        sliding_window_size=4,  # < the test's 12 tokens: the window matters
        use_post_ffw_norm=True,
        use_post_attention_norm=True,
        **TINY_BACKBONE,
    )
    for weight in backbone.weights:  # random norms: exercises the 1 + w scale
        if weight.path.endswith("scale"):
            weight.assign(keras.random.normal(weight.shape, stddev=0.5))
    preprocessor = keras_hub.models.Gemma3CausalLMPreprocessor(tokenizer, sequence_length=64)
    causal_lm = keras_hub.models.Gemma3CausalLM(backbone=backbone, preprocessor=preprocessor)
    causal_lm.save_to_preset(str(directory))
    return directory


# Measured: at most 2.5e-6 on logits of size ~1 (float32 JAX vs float32 torch,
# the same sums in another order); 1e-4 leaves room for other CPUs' kernels.
TORCH_ATOL = 1e-4


def torch_logits(model) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.tensor(TOKEN_IDS, dtype=torch.long)).logits.numpy()


def load_hf(directory):
    return transformers.AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32)
