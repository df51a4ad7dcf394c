"""Attention within each packed example: a block-diagonal causal mask.

With `packing`, a row holds several examples end to end (`data.batches.pack_rows`)
and `segment_ids` numbers them (0 on padding). keras-hub's decoder blocks
build their causal mask from a `[batch, length]` padding mask only, so while
the trainer calls the backbone, `segment_attention` narrows each block's mask
to pairs of positions in the same example. Nothing else needs to change for
models with rotary position embeddings: attention scores depend only on the
distance between two positions, so an example placed at offset 100 scores as
it does at offset 0. Models with learned absolute positions (GPT-2, OPT) would
see each packed example at its offset in the row, so its loss would differ.

Packing is therefore admitted only for `PACKING_BACKBONES`, the exact classes
for which tests/test_packing.py checks the loss and gradients against the
same examples unpacked (that test is parametrized over this list).
"""

from __future__ import annotations

import contextlib

from keras import ops

# The method that builds a decoder block's [batch, query, key] attention mask,
# by keras-hub architecture (Gemma, Gemma 3: the first; Llama, Mistral: the second).
MASK_METHODS = ("_compute_attention_mask", "_compute_self_attention_mask")


# keras-hub backbone classes (by name, exact class: a subclass may change the
# decoder) whose packed loss and gradients equal unpacked, by test.
PACKING_BACKBONES = ("GemmaBackbone", "Gemma3Backbone", "LlamaBackbone", "Llama3Backbone")


def supports_packing(backbone) -> bool:
    """Whether packing is proven correct for `backbone`'s architecture."""
    layers = getattr(backbone, "transformer_layers", None)
    return (
        type(backbone).__name__ in PACKING_BACKBONES
        and type(backbone).__module__.startswith("keras_hub.")
        and bool(layers)
        and all(_mask_method(layer) for layer in layers)
    )


def check_packing(backbone) -> None:
    """Refuses packing for an architecture it is not proven correct for."""
    if supports_packing(backbone):
        return
    name = type(backbone).__name__
    raise ValueError(
        f"`packing` is not supported for {name}: packing is only admitted for "
        f"architectures whose packed loss is tested equal to unpacked "
        f"({', '.join(PACKING_BACKBONES)}; rotary positions and a decoder mask "
        f"keras_ft narrows to each example). {name}'s packed examples would not "
        "train as they do alone (e.g. learned absolute positions see each "
        "example at its offset in the row). Set `packing: false` in the config or "
        "pass --no-packing. Received: packing=True"
    )


@contextlib.contextmanager
def segment_attention(backbone, segment_ids):
    """Within this block, `backbone`'s decoder blocks attend within segments only.

    Args:
        segment_ids: int [batch, length], 1, 2, ... per example of a row, 0 on
            padding (padding is also masked by the padding mask).
    """
    check_packing(backbone)
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
