"""Token cross-entropy over a large vocabulary without materialising logits.

With Gemma's 262,144-entry tied vocabulary, `[batch, 256, vocab]` float32
logits are 268 MB per example and the output projection is ~60 % of a LoRA
step. `token_loss_stats` computes the same cross-entropy as
`keras.losses.SparseCategoricalCrossentropy(from_logits=True)`, but:

- only for rows that bear loss: rows are reordered so loss-bearing ones come
  first, and chunks holding none (padding, prompt tokens) are skipped;
- chunk by chunk, so at most `[chunk_size, vocab]` logits exist at once;
- with the gradient w.r.t. the hidden states formed in the same pass (the
  output matrix is frozen under LoRA), so the backward pass re-computes nothing.

keras-hub's `CausalLM` has none of this; the straightforward computation stays
in `reference_token_loss_stats` and tests hold the two equal.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import keras
import numpy as np
from keras import ops

STATS = ("loss_sum", "weight_sum", "correct_sum")  # columns of the stats


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
    """Straightforward per-example [loss_sum, weight_sum, correct_sum].

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
    return ops.stack([ops.sum(losses * weights, axis=1), ops.sum(weights, axis=1),
                      ops.sum(correct * weights, axis=1)], axis=1)


def token_loss_stats(hidden, matrix, labels, weights, soft_cap=None, chunk_size=128,
                     row_step=None):
    """Per-example [loss_sum, weight_sum, correct_sum], computed in chunks (JAX).

    Args:
        hidden: [batch, length, hidden] final hidden states.
        matrix: [vocab, hidden] output projection (tied embeddings).
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
    # Cast the (frozen) head once, not once per chunk.
    matrix = jax.lax.stop_gradient(matrix).astype(h.dtype)
    sizes = chunk_sizes(chunk_size, row_step)
    loss, correct = _chunked_cross_entropy(h, matrix, lab, w, soft_cap, sizes)
    example = order // length
    stats = [jax.ops.segment_sum(v[:rows], example, num_segments=batch)
             for v in (loss, w[:rows], correct)]
    return jnp.stack(stats, axis=1)


def chunk_sizes(chunk_size: int, row_step: int | None = None) -> tuple[int, ...]:
    """Row counts a chunk may be computed at: multiples of `row_step`
    (default chunk_size / 8), the last one chunk_size."""
    step = row_step or max(chunk_size // 8, 1)
    return tuple(sorted({min(step * i, chunk_size)
                         for i in range(1, -(-chunk_size // step) + 1)}))


def _rows_forward(h, matrix, lab, w, soft_cap, with_grad):
    """Cross-entropy (and d loss / d h) of rows h; logits exist only here."""
    logits = jnp.dot(h, matrix.T, preferred_element_type=jnp.float32)
    if soft_cap:
        capped = jnp.tanh(logits / soft_cap)
        logits = capped * soft_cap
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, lab[:, None], axis=1)[:, 0]
    loss = (lse - picked) * w
    correct = (jnp.argmax(logits, axis=-1) == lab).astype(jnp.float32) * w
    if not with_grad:
        return loss, correct
    # d(loss)/d(logits) = softmax - one_hot, scaled by the row weight.
    dz = jnp.exp(logits - lse[:, None])
    dz = dz.at[jnp.arange(h.shape[0]), lab].add(-1.0) * w[:, None]
    if soft_cap:
        dz = dz * (1.0 - capped * capped)
    dh = jnp.dot(dz.astype(matrix.dtype), matrix,
                 preferred_element_type=jnp.float32).astype(h.dtype)
    return loss, correct, dh


def _chunk_forward(h, matrix, lab, w, soft_cap, sizes, with_grad):
    """One chunk, computed on only as many leading rows as bear loss.

    Rows are sorted loss-bearing first, so a chunk's loss rows are a prefix.
    `lax.switch` picks the smallest of a few static row counts holding them
    (or skips the chunk): under 1/8 of a chunk is computed for nothing, while
    every shape stays static. (A single fixed size wasted ~45 % of the head's
    work on Dolly at batch 1: 71 loss rows on average, padded to 128.)
    """
    size = h.shape[0]

    def branch(rows):
        def run(_):
            if rows == 0:
                out = (jnp.zeros((size,), jnp.float32),) * 2
                return out + (jnp.zeros_like(h),) if with_grad else out
            out = _rows_forward(h[:rows], matrix, lab[:rows], w[:rows], soft_cap, with_grad)
            return tuple(jnp.pad(o, ((0, size - rows),) + ((0, 0),) * (o.ndim - 1))
                         for o in out)
        return run

    used = jnp.sum(w != 0)
    index = jnp.searchsorted(jnp.asarray(sizes), used)  # sizes[index-1] < used <= sizes[index]
    index = jnp.where(used == 0, 0, index + 1)
    return jax.lax.switch(index, [branch(0)] + [branch(r) for r in sizes], None)


def _map_chunks(h, matrix, lab, w, soft_cap, sizes, with_grad):
    chunk_size = sizes[-1]
    n = h.shape[0] // chunk_size
    split = lambda a: a.reshape((n, chunk_size) + a.shape[1:])
    fn = lambda args: _chunk_forward(*args[:1], matrix, *args[1:], soft_cap, sizes, with_grad)
    out = jax.lax.map(fn, (split(h), split(lab), split(w)))
    return tuple(o.reshape((n * chunk_size,) + o.shape[2:]) for o in out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _chunked_cross_entropy(h, matrix, lab, w, soft_cap, sizes):
    return _map_chunks(h, matrix, lab, w, soft_cap, sizes, with_grad=False)


def _fwd(h, matrix, lab, w, soft_cap, sizes):
    loss, correct, dh = _map_chunks(h, matrix, lab, w, soft_cap, sizes, with_grad=True)
    return (loss, correct), (dh, matrix, lab, w)


def _bwd(soft_cap, sizes, residuals, cotangents):
    dh, matrix, lab, w = residuals
    g_loss, _ = cotangents
    # The output matrix is frozen under LoRA: its cotangent is never needed.
    return (dh * g_loss[:, None].astype(dh.dtype), jnp.zeros_like(matrix),
            np.zeros(lab.shape, dtype=jax.dtypes.float0), jnp.zeros_like(w))


_chunked_cross_entropy.defvjp(_fwd, _bwd)
