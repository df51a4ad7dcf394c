"""Token cross-entropy over a large vocabulary without materialising logits.

With Gemma's 262,144-entry tied vocabulary, `[batch, 256, vocab]` float32
logits are 268 MB per example and the output projection is ~60 % of a LoRA
step. `token_loss_stats` computes the same cross-entropy as
`keras.losses.SparseCategoricalCrossentropy(from_logits=True)`, but:

- only for rows that bear loss: rows are reordered so loss-bearing ones come
  first, and chunks holding none (padding, prompt tokens) are skipped;
- chunk by chunk, so at most `[chunk_size, vocab]` logits exist at once;
- with the gradient w.r.t. the hidden states formed in the same pass when the
  output matrix is frozen (LoRA elsewhere), so the backward pass re-computes
  nothing. When the matrix trains (LoRA on a tied `token_embedding`, which is
  also the head), the backward pass recomputes each chunk's logits and forms
  both gradients, the matrix's summed chunk by chunk: the custom VJP sees
  (`symbolic_zeros`) whether the matrix is differentiated at all.

keras-hub's `CausalLM` has none of this; the straightforward computation stays
in `reference_token_loss_stats` and tests hold the two equal.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import keras
from jax.custom_derivatives import SymbolicZero
from keras import ops


class LossStats(NamedTuple):
    """The columns of the per-example statistics both loss functions return.

    `token_loss_stats` and `reference_token_loss_stats` return `[batch, 3]`:
    per example the summed cross-entropy over its loss-bearing tokens, the sum
    of its loss weights (the loss-bearing tokens) and the weighted count of
    correct next-token predictions, in the order of these fields. Read the
    columns through this view, never by a bare index.
    """

    loss_sum: Any
    weight_sum: Any
    correct_sum: Any

    @classmethod
    def summed(cls, stats) -> "LossStats":
        """Each column of `stats` ([batch, 3], a tensor) summed over the batch."""
        return cls(*(ops.sum(stats[:, column]) for column in range(len(cls._fields))))

    def mean_loss(self):
        """Mean cross-entropy per loss-bearing token (0 when there are none)."""
        return self.loss_sum / ops.maximum(self.weight_sum, 1.0)


def output_projection(backbone):
    """Returns (matrix [vocab, hidden], soft cap or None) of a backbone's head."""
    layer = backbone.token_embedding
    if getattr(layer, "quantization_mode", None):
        raise NotImplementedError("quantized output embeddings use the reference loss")
    if layer.tie_weights:
        matrix = layer.embeddings
    else:
        matrix = ops.transpose(layer.reverse_embeddings)
    return matrix, getattr(layer, "logit_soft_cap", None)


def reference_token_loss_stats(hidden, logits_fn, labels, weights):
    """Straightforward per-example `LossStats` columns [batch, 3].

    Args:
        hidden: [batch, length, hidden] final hidden states.
        logits_fn: hidden -> logits, e.g. `token_embedding(h, reverse=True)`.
        labels: [batch, length] next-token ids.
        weights: [batch, length] loss weights (0 on padding and prompt).
    """
    logits = ops.cast(logits_fn(hidden), "float32")
    losses = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    weights = ops.cast(weights, "float32")
    correct = ops.cast(ops.equal(ops.argmax(logits, axis=-1), labels), "float32")
    return ops.stack(
        [
            ops.sum(losses * weights, axis=1),
            ops.sum(weights, axis=1),
            ops.sum(correct * weights, axis=1),
        ],
        axis=1,
    )


def token_loss_stats(hidden, matrix, labels, weights, soft_cap=None, chunk_size=128, row_step=None):
    """Per-example `LossStats` columns [batch, 3], computed in chunks (JAX).

    Args:
        hidden: [batch, length, hidden] final hidden states.
        matrix: [vocab, hidden] output projection (tied embeddings); may
            carry trainable weights (e.g. LoRA), which then get gradients.
        labels: [batch, length] int next-token ids.
        weights: [batch, length] float loss weights.
        soft_cap: Gemma 2 style final logit soft cap, or None.
        chunk_size: rows per chunk; bounds the logits held in memory.
        row_step: a chunk's loss-bearing rows are computed rounded up to a
            multiple of this (default chunk_size // 8); chunk_size computes
            whole chunks.

    The head runs in `hidden`'s dtype (bfloat16 under a mixed policy) with
    float32 accumulation, logsumexp and gradients.
    """
    batch, length, dim = hidden.shape
    rows = batch * length
    h = jnp.reshape(jnp.asarray(hidden), (rows, dim))
    lab = jnp.reshape(jnp.asarray(labels), (rows,)).astype(jnp.int32)
    w = jnp.reshape(jnp.asarray(weights), (rows,)).astype(jnp.float32)
    # Loss-bearing rows first (stable), so all-zero chunks gather at the end.
    order = jnp.argsort(w == 0, stable=True)
    pad = (-rows) % chunk_size
    h = jnp.pad(h[order], ((0, pad), (0, 0)))
    lab = jnp.pad(lab[order], (0, pad))
    w = jnp.pad(w[order], (0, pad))
    # Cast the head once, not once per chunk (if the head trains, the
    # gradient flows back through the cast to its float32 weights).
    matrix = jnp.asarray(matrix).astype(h.dtype)
    sizes = chunk_sizes(chunk_size, row_step)
    loss, correct = _chunked_cross_entropy(h, matrix, lab, w, soft_cap, sizes)
    example = order // length
    stats = [
        jax.ops.segment_sum(v[:rows], example, num_segments=batch)
        for v in (loss, w[:rows], correct)
    ]
    return jnp.stack(stats, axis=1)


def chunk_sizes(chunk_size: int, row_step: int | None = None) -> tuple[int, ...]:
    """Row counts a chunk may be computed at: multiples of `row_step`
    (default chunk_size / 8), the last one chunk_size."""
    step = row_step or max(chunk_size // 8, 1)
    return tuple(sorted({min(step * i, chunk_size) for i in range(1, -(-chunk_size // step) + 1)}))


def _rows(h, matrix, lab, w, soft_cap, want, scale=None, acc=None):
    """Cross-entropy terms of rows h; logits exist only here.

    Args:
        want: what to return, in this order, from "loss", "correct" (per row),
            "dh" (d loss / d h per row) and "dmatrix" (d loss / d matrix
            summed over the rows, added to `acc`).
        scale: per-row factor on the gradients (the loss cotangent), or None.
    """
    logits = jnp.dot(h, matrix.T, preferred_element_type=jnp.float32)
    if soft_cap:
        capped = jnp.tanh(logits / soft_cap)
        logits = capped * soft_cap
    lse = jax.nn.logsumexp(logits, axis=-1)
    out = {}
    if "loss" in want:
        picked = jnp.take_along_axis(logits, lab[:, None], axis=1)[:, 0]
        out["loss"] = (lse - picked) * w
    if "correct" in want:
        out["correct"] = (jnp.argmax(logits, axis=-1) == lab).astype(jnp.float32) * w
    if "dh" in want or "dmatrix" in want:
        # d(loss)/d(logits) = softmax - one_hot, scaled by the row weight.
        row_scale = w if scale is None else w * scale
        dz = jnp.exp(logits - lse[:, None])
        dz = dz.at[jnp.arange(h.shape[0]), lab].add(-1.0) * row_scale[:, None]
        if soft_cap:
            dz = dz * (1.0 - capped * capped)
        dz = dz.astype(matrix.dtype)
        if "dh" in want:
            out["dh"] = jnp.dot(dz, matrix, preferred_element_type=jnp.float32).astype(h.dtype)
        if "dmatrix" in want:
            out["dmatrix"] = acc + jnp.dot(dz.T, h, preferred_element_type=jnp.float32)
    return tuple(out[name] for name in want)


def _chunk(h, matrix, lab, w, scale, acc, soft_cap, sizes, want):
    """One chunk, computed on only as many leading rows as bear loss.

    Rows are sorted loss-bearing first, so a chunk's loss rows are a prefix.
    `lax.switch` picks the smallest of a few static row counts holding them
    (or skips the chunk): under 1/8 of a chunk is computed for nothing, while
    every shape stays static. (A single fixed size wasted ~45 % of the head's
    work on Dolly at batch 1: 71 loss rows on average, padded to 128.)
    Returns `want`'s values; per-row ones cover the whole chunk.
    """
    size = h.shape[0]

    def branch(rows):
        def run(acc):
            if rows == 0:  # no loss row: zeros, and the matrix gradient unchanged
                zeros = {
                    "loss": jnp.zeros((size,), jnp.float32),
                    "correct": jnp.zeros((size,), jnp.float32),
                    "dh": jnp.zeros_like(h),
                    "dmatrix": acc,
                }
                return tuple(zeros[name] for name in want)
            out = _rows(
                h[:rows],
                matrix,
                lab[:rows],
                w[:rows],
                soft_cap,
                want,
                None if scale is None else scale[:rows],
                acc,
            )
            return tuple(
                o
                if name == "dmatrix"
                else jnp.pad(o, ((0, size - rows),) + ((0, 0),) * (o.ndim - 1))
                for name, o in zip(want, out)
            )

        return run

    used = jnp.sum(w != 0)
    index = jnp.searchsorted(jnp.asarray(sizes), used)  # sizes[index-1] < used <= sizes[index]
    index = jnp.where(used == 0, 0, index + 1)
    return jax.lax.switch(index, [branch(0)] + [branch(r) for r in sizes], acc)


def _map_chunks(h, matrix, lab, w, soft_cap, sizes, want, scale=None):
    """`want` over all rows, chunk by chunk; "dmatrix" is summed over chunks."""
    chunk_size = sizes[-1]
    n = h.shape[0] // chunk_size
    split = lambda a: None if a is None else a.reshape((n, chunk_size) + a.shape[1:])
    per_row = [name for name in want if name != "dmatrix"]

    def step(acc, xs):
        h_c, lab_c, w_c, scale_c = xs
        out = dict(zip(want, _chunk(h_c, matrix, lab_c, w_c, scale_c, acc, soft_cap, sizes, want)))
        return out.get("dmatrix"), tuple(out[name] for name in per_row)

    acc = jnp.zeros(matrix.shape, jnp.float32) if "dmatrix" in want else None
    acc, rows = jax.lax.scan(step, acc, (split(h), split(lab), split(w), split(scale)))
    out = dict(zip(per_row, (o.reshape((n * chunk_size,) + o.shape[2:]) for o in rows)))
    out["dmatrix"] = acc
    return tuple(out[name] for name in want)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _chunked_cross_entropy(h, matrix, lab, w, soft_cap, sizes):
    return _map_chunks(h, matrix, lab, w, soft_cap, sizes, ("loss", "correct"))


def _fwd(h, matrix, lab, w, soft_cap, sizes):
    # symbolic_zeros: each array argument comes as (value, perturbed).
    args = (h.value, matrix.value, lab.value, w.value)
    if matrix.perturbed:
        # The head trains (LoRA on a tied embedding). Its gradient needs each
        # row's loss cotangent, so the backward pass recomputes the logits.
        out = _map_chunks(*args, soft_cap, sizes, ("loss", "correct"))
        return out, (None, args)
    # The head is frozen (LoRA elsewhere): d loss / d h comes from this same
    # pass, and the backward pass only scales it.
    loss, correct, dh = _map_chunks(*args, soft_cap, sizes, ("loss", "correct", "dh"))
    return (loss, correct), (dh, None)


def _bwd(soft_cap, sizes, residuals, cotangents):
    dh, saved = residuals
    g_loss = cotangents[0]  # `correct` (an argmax) has no gradient
    if isinstance(g_loss, SymbolicZero):
        return None, None, None, None
    if saved is None:
        return dh * g_loss[:, None].astype(dh.dtype), None, None, None
    h, matrix, lab, w = saved
    dh, dmatrix = _map_chunks(h, matrix, lab, w, soft_cap, sizes, ("dh", "dmatrix"), scale=g_loss)
    return dh, dmatrix.astype(matrix.dtype), None, None


_chunked_cross_entropy.defvjp(_fwd, _bwd, symbolic_zeros=True)
