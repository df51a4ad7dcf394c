"""Tokenized examples -> padded (optionally packed) training batches."""

from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np

from keras_ft.data.tokenizer import TokenizedExample


def bucket_lengths(sequence_length: int, num_buckets: int) -> list[int]:
    """`num_buckets` evenly spaced padded lengths up to `sequence_length`.

    Padding every example to `sequence_length` wastes most of the compute on
    short data (63 % on Dolly at 256); padding to the nearest of a few bucket
    lengths removes most of it while compiling only `num_buckets` shapes.
    Training uses `fitted_bucket_lengths`; these linear buckets are its
    reference, kept for the tests and benchmarks that measure it against them.
    """
    step = -(-sequence_length // num_buckets)
    return sorted({min(step * i, sequence_length) for i in range(1, num_buckets + 1)})


def fitted_bucket_lengths(
    padded_lengths: Sequence[int], num_buckets: int, sequence_length: int, multiple: int = 8
) -> list[int]:
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


def make_batch(
    examples: Sequence[TokenizedExample], buckets: Sequence[int], pad_id: int
) -> tuple[dict, None, None]:
    """Pads examples into one batch shaped for `CausalLMTrainer`, one per row.

    `BatchSequence` batches through `make_packed_batch`; this one-example-
    per-row form is the unpacked reference the loss and packing tests compare
    against.

    Returns:
        (x, None, None) for keras `fit`: x holds `token_ids`, `padding_mask`,
        `labels` (next tokens) and `loss_weights` (1 where loss is taken).
    """
    return make_packed_batch([[e] for e in examples], buckets, pad_id, segments=False)


def make_packed_batch(
    rows: Sequence[Sequence[TokenizedExample]],
    buckets: Sequence[int],
    pad_id: int,
    segments: bool = True,
) -> tuple[dict, None, None]:
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
    x = {
        "token_ids": ids,
        "padding_mask": segment_ids > 0,
        "labels": labels,
        "loss_weights": weights,
    }
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
        raise ValueError(
            f"An example of {lengths.max()} tokens does not fit a packed row of {row_length}."
        )
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


class BatchSequence(keras.utils.PyDataset):
    """Batches of tokenized examples, reshuffled per epoch from the seed.

    A batch holds `batch_size` rows. A row is one example, or with `packing`
    several examples laid end to end (`pack_rows`: fixed for the run,
    attention kept within each example by the trainer). Rows are padded to
    the nearest bucket length (`num_buckets` fixed shapes, default 4, or 2
    when packing; fitted to the lengths of epoch 0's batches), so little
    compute goes to padding and XLA compiles only a few programs. Batch `b`
    of epoch `e` holds `example_indices(e, b)`, a pure function of (seed, e,
    b). It serves the span of one epoch set by `set_span` (by default all of
    epoch 0).

    Under a mesh (`shard`, a `distribution.mesh.DataShard`) a batch is the
    global batch: every batch, the last of an epoch included, has
    `batch_size` rows (a short one is filled with empty rows, which bear no
    loss), all rows are padded to the bucket of the longest row of the whole
    batch, and this process serves only its rows, `shard.rows(batch_size)`;
    Keras' `fit` places them on this host's devices along the data axis. The
    order stays the pure function of (seed, epoch, batch) above on every host.
    """

    def __init__(
        self,
        examples: Sequence[TokenizedExample],
        batch_size: int,
        sequence_length: int,
        pad_id: int,
        seed: int,
        shuffle: bool = True,
        num_buckets: int | None = None,
        buckets: Sequence[int] | None = None,
        packing: bool = False,
        shard=None,
    ):
        super().__init__()
        if not examples:
            raise ValueError(
                "No examples to batch: the dataset is empty after filtering and truncation."
            )
        self.examples = examples  # a Sequence; may be memory-mapped
        self.batch_size = batch_size
        self.pad_id, self.seed, self.shuffle, self.packing = pad_id, seed, shuffle, packing
        self.shard = shard
        if shard is not None:
            shard.rows(batch_size)  # refuses a batch that does not split over the hosts
        sizes = (
            examples.sizes()
            if hasattr(examples, "sizes")
            else np.asarray([len(e.token_ids) for e in examples])
        )
        # Rows as slices of one index array: row r holds members[bounds[r]:bounds[r+1]].
        if packing:
            rows = pack_rows(sizes - 1, sequence_length, seed)
            self.members = np.concatenate(rows)
            self.bounds = np.cumsum([0] + [len(r) for r in rows])
        else:
            self.members, self.bounds = np.arange(len(sizes)), np.arange(len(sizes) + 1)
        self.sizes = sizes
        row_lengths = np.add.reduceat(sizes[self.members] - 1, self.bounds[:-1])
        self.num_rows = len(row_lengths)
        self.batches_per_epoch = math.ceil(self.num_rows / batch_size)
        longest = np.maximum.reduceat(
            row_lengths[self.order(0)], np.arange(0, self.num_rows, batch_size)
        )
        # Later epochs batch other rows together; their longest still fits the
        # last bucket, which covers the longest row. Packed rows are nearly
        # full: 2 buckets pad Dolly 1.013x (4: 1.009x) at half the compiles.
        num_buckets = num_buckets or (2 if packing else 4)
        self.buckets = (
            list(buckets)
            if buckets
            else fitted_bucket_lengths(
                np.append(longest, row_lengths.max()), num_buckets, sequence_length
            )
        )
        if self.buckets[-1] < row_lengths.max():
            raise ValueError(
                f"buckets={self.buckets} do not fit the longest row ({row_lengths.max()} tokens)."
            )
        self.span = (0, 0, self.batches_per_epoch)

    def set_span(self, epoch: int, start: int = 0, stop: int | None = None) -> None:
        """Serves batches [start, stop) of `epoch` (a resumed run starts mid-epoch)."""
        stop = self.batches_per_epoch if stop is None else stop
        if not 0 <= start < stop <= self.batches_per_epoch:
            raise ValueError(
                f"Bad span [{start}, {stop}) of an epoch of {self.batches_per_epoch} batches."
            )
        self.span = (epoch, start, stop)

    def __len__(self):
        return self.span[2] - self.span[1]

    def order(self, epoch: int) -> np.ndarray:
        """The order of rows in `epoch`."""
        if not self.shuffle:
            return np.arange(self.num_rows)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)

    def batch_rows(self, epoch: int, batch: int) -> list[np.ndarray]:
        """Example indices of each row of batch `batch` of epoch `epoch`."""
        rows = self.order(epoch)[batch * self.batch_size : (batch + 1) * self.batch_size]
        return [self.members[self.bounds[r] : self.bounds[r + 1]] for r in rows]

    def example_indices(self, epoch: int, batch: int) -> np.ndarray:
        """Indices of the examples in batch `batch` of epoch `epoch`."""
        return np.concatenate(self.batch_rows(epoch, batch))

    def batch_indices(self, index: int) -> np.ndarray:
        """Example indices of batch `index` of the current span."""
        epoch, start, _ = self.span
        return self.example_indices(epoch, start + index)

    def __getitem__(self, index):
        epoch, start, _ = self.span
        rows = self.batch_rows(epoch, start + index)
        buckets = self.buckets
        if self.shard is not None:  # the global batch's shape, this host's rows
            rows += [np.zeros(0, np.int64)] * (self.batch_size - len(rows))
            longest = max(int(self.sizes[row].sum()) - len(row) for row in rows)
            buckets = [next(b for b in self.buckets if b >= longest)]
            rows = rows[self.shard.rows(self.batch_size)]
        x, _, _ = make_packed_batch(
            [[self.examples[i] for i in row] for row in rows],
            buckets,
            self.pad_id,
            segments=self.packing,
        )
        return x

    def num_real_tokens(self, index: int) -> int:
        return sum(len(self.examples[i].token_ids) - 1 for i in self.batch_indices(index))
