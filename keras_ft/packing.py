"""Attention within each packed example: a block-diagonal causal mask.

With `packing`, a row holds several examples end to end (`tokens.pack_rows`)
and `segment_ids` numbers them (0 on padding). keras-hub's decoder blocks
build their causal mask from a `[batch, length]` padding mask only, so while
the trainer calls the backbone, `segment_attention` narrows each block's mask
to pairs of positions in the same example. Nothing else needs to change: the
models' rotary position embeddings make attention scores depend only on the
distance between two positions, so an example placed at offset 100 scores as
it does at offset 0 (tests/test_packing.py checks the loss and gradients
against the same examples unpacked).
"""

from __future__ import annotations

import contextlib

from keras import ops

# The method that builds a decoder block's [batch, query, key] attention mask,
# by keras-hub architecture (Gemma, Gemma 3: the first; Llama, Mistral: the second).
MASK_METHODS = ("_compute_attention_mask", "_compute_self_attention_mask")


def supports_packing(backbone) -> bool:
    """Whether every decoder block of `backbone` has a mask method we can narrow."""
    layers = getattr(backbone, "transformer_layers", None)
    return bool(layers) and all(_mask_method(layer) for layer in layers)


@contextlib.contextmanager
def segment_attention(backbone, segment_ids):
    """Within this block, `backbone`'s decoder blocks attend within segments only.

    Args:
        segment_ids: int [batch, length], 1, 2, ... per example of a row, 0 on
            padding (padding is also masked by the padding mask).
    """
    if not supports_packing(backbone):
        raise ValueError(
            f"Packing is not supported for {type(backbone).__name__}: its decoder "
            f"blocks have none of {MASK_METHODS}. Train with packing=False.")
    same = ops.expand_dims(segment_ids, 2) == ops.expand_dims(segment_ids, 1)
    patched = []
    try:
        for layer in backbone.transformer_layers:
            name = _mask_method(layer)
            original = getattr(layer, name)
            # The instance attribute shadows the class method until deleted.
            object.__setattr__(layer, name, _narrowed(original, same))
            patched.append((layer, name))
        yield
    finally:
        for layer, name in patched:
            object.__delattr__(layer, name)


def _mask_method(layer) -> str | None:
    return next((name for name in MASK_METHODS if hasattr(layer, name)), None)


def _narrowed(compute_mask, same_segment):
    def compute(*args, **kwargs):
        mask = compute_mask(*args, **kwargs)
        return ops.logical_and(ops.cast(mask, "bool"), same_segment)
    return compute
