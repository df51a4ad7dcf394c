"""keras_ft's compiled generation loop over keras-hub's cached forward pass.

keras-hub's `generate_step` decodes until the end of its token buffer unless
every row stops, runs the prefill over the whole buffer (prompt and room for
the reply alike), then runs the prompt's last token once more to get the
first new token. This loop is built from the same pieces (`_build_cache`,
`call_with_cache`, the sampler's `run_loop`, `compute_probabilities`,
`get_next_token`) and differs only in that:

- it stops at `max_length`, a traced scalar: buffers keep lengths rounded up
  to `step` (few compiles) without decoding into the rounding;
- the prefill covers the prompts only (rounded up to `step`), and its last
  hidden state gives the first new token: no decode step re-runs the prompt;
- attention kernels reach the loop laid out as XLA's dots want them, so no
  decode step copies weights (see `store`);
- it may apply a repetition penalty and a no-repeat n-gram ban to the logits
  before the sampler sees them (`penalize_logits`, transformers' semantics),
  compiled in only when asked for.

The same pieces also run one token at a time (`GenerateLoop.tokens`, for
streaming): a compiled prefill and a compiled decode step, with the same
sampling and penalties as the loop.

With the penalties off, greedy outputs equal keras-hub's (tests/generation).
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import keras
import numpy as np
from keras import ops, tree
from keras_hub.src.utils.tensor_utils import any_equal


class GenerateLoop:
    """`loop(inputs, stop_token_ids=None, max_length=None)` -> token ids and mask.

    Inputs and outputs are keras-hub's: {"token_ids", "padding_mask"} with the
    prompts left-aligned. In the output, the mask is False after a stop token
    and at the positions not generated (from `max_length` on).

    The loop holds its model weakly (`generate.generate_function` caches one
    loop per model): a model its caller drops is freed, loop or not.

    `repetition_penalty` (1.0: off) and `no_repeat_ngram_size` (0: off) are
    fixed per loop, compile-time switches: with both off, the compiled
    functions are those of a loop without them (`penalize_logits`).
    """

    def __init__(
        self,
        causal_lm,
        sampler,
        step: int,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
    ):
        self._causal_lm = weakref.ref(causal_lm)
        self.sampler, self.step = sampler, step
        self.repetition_penalty = float(repetition_penalty)
        self.no_repeat_ngram_size = int(no_repeat_ngram_size)
        # Listed once: walking the layers costs milliseconds a call. A model
        # whose weights change in number gets a new loop (`generate_function`).
        self._model_vars = causal_lm.trainable_variables + causal_lm.non_trainable_variables
        self._prefill_takes_mask = (
            "padding_mask" in inspect.signature(causal_lm._build_cache).parameters
        )  # Gemma 3
        self._update_mask = (
            "cache_update_mask" in inspect.signature(causal_lm.call_with_cache).parameters
        )
        self._compiled = jax.jit(
            self.compiled_generate_function, static_argnames=("prefill_length", "stop_token_ids")
        )
        self._heads = [i for i, v in enumerate(self._model_vars) if _is_head_kernel(v)]
        self._store = jax.jit(lambda values: [store(v) for v in values])
        self._stored = ([], [])  # (the kernels' values, their stored copies)
        # One token at a time (`tokens`). The cache is updated in place where
        # the backend can (CPU ignores donation, with a warning each call).
        donate = () if jax.default_backend() == "cpu" else (1, 3)
        self._compiled_prefill = jax.jit(
            self.compiled_prefill_function, static_argnames=("prefill_length",)
        )
        self._compiled_step = jax.jit(self.compiled_step_function, donate_argnums=donate)

    @property
    def causal_lm(self):
        """The model this loop runs (held weakly)."""
        self._check_alive()
        return self._causal_lm()

    def _check_alive(self) -> None:
        if self._causal_lm() is None:
            raise RuntimeError(
                "This generation loop's causal LM was deleted: keep the model "
                "while you use its loop, or call "
                "generate_function(causal_lm, cfg) again."
            )

    def _variables(self):
        return self.sampler.variables, self._model_vars

    def __call__(self, inputs, stop_token_ids=None, max_length=None):
        self._check_alive()  # a new shape traces the model: fail alike for every shape
        mask = np.asarray(inputs["padding_mask"], bool)
        length = mask.shape[1]
        longest = max(int(mask.sum(axis=1).max()), 1)
        prefill = min(-(-longest // self.step) * self.step, length)
        end = length if max_length is None else min(int(max_length), length)
        sampler_vars, model_vars = self._variables()
        state = ([v.value for v in sampler_vars], self._weights())
        token_ids, out_mask, sampler_state = self._compiled(
            state,
            np.asarray(inputs["token_ids"], np.int32),
            mask,
            np.int32(end),
            prefill_length=prefill,
            stop_token_ids=tuple(stop_token_ids) if stop_token_ids else None,
        )
        self._assign_sampler_state(sampler_state)
        return {"token_ids": token_ids, "padding_mask": out_mask}

    def tokens(self, prompt: Sequence[int], length: int, max_length: int) -> Iterator[int]:
        """The new tokens after `prompt`, one at a time, as they are sampled.

        The same prefill, sampling and penalties as a call on a one-row batch
        of `length` tokens (the prompt left-aligned), one compiled decode step
        per token, so a caller can show each token and stop between any two.
        Ends at `max_length` (prompt included, at most `length`); stop tokens
        are the caller's to look for (it stops iterating).
        """
        self._check_alive()
        prompt = [int(t) for t in prompt]
        if not prompt or len(prompt) >= min(max_length, length):
            return
        token_ids = np.zeros((1, length), np.int32)
        mask = np.zeros((1, length), bool)
        token_ids[0, : len(prompt)], mask[0, : len(prompt)] = prompt, True
        prefill = min(-(-len(prompt) // self.step) * self.step, length)
        sampler_vars, _ = self._variables()
        weights = self._weights()  # fixed for the reply: read once
        state = ([v.value for v in sampler_vars], weights)
        token_ids, cache, index, seeds = self._compiled_prefill(
            state, token_ids, mask, prefill_length=prefill
        )
        self._assign_sampler_state(seeds)
        for position in range(len(prompt), min(max_length, length)):
            if position > len(prompt):
                state = ([v.value for v in sampler_vars], weights)
                token_ids, cache, index, seeds = self._compiled_step(
                    state, token_ids, mask, cache, index
                )
                self._assign_sampler_state(seeds)
            yield int(token_ids[0, position])

    def _assign_sampler_state(self, values) -> None:
        for ref, value in zip(self.sampler.variables, values):
            ref.assign(value)

    def _weights(self) -> list:
        """The model's weights, attention kernels as `store`d copies.

        The copies are made again only when the kernels' values change.
        """
        values = [v.value for v in self._model_vars]
        kernels = [values[i] for i in self._heads]
        sources, stored = self._stored
        if len(sources) != len(kernels) or any(a is not b for a, b in zip(sources, kernels)):
            self._stored = sources, stored = kernels, self._store(kernels)
        for i, value in zip(self._heads, stored):
            values[i] = value
        return values

    def compiled_generate_function(
        self, state, token_ids, padding_mask, end, prefill_length, stop_token_ids
    ):
        def decode():
            return self._decode(
                state[1], token_ids, padding_mask, end, prefill_length, stop_token_ids
            )

        return self._stateless(state, decode)

    def compiled_prefill_function(self, state, token_ids, padding_mask, prefill_length):
        """The loop's prefill and first token: (token ids, cache, index)."""
        return self._stateless(
            state, lambda: self._prefill(token_ids, padding_mask, None, prefill_length)
        )

    def compiled_step_function(self, state, token_ids, padding_mask, cache, index):
        """One of the loop's decode steps: (token ids, cache, index)."""
        return self._stateless(state, lambda: self._body(padding_mask)(token_ids, cache, index))

    def _stateless(self, state, run):
        """`run()`'s outputs plus the sampler's new state, the model's weights
        and the sampler's seeds taken from `state` (stored kernels `load`ed)."""
        sampler_vars, model_vars = self._variables()
        weights = [load(v, value) for v, value in zip(model_vars, state[1])]
        mapping = zip(list(sampler_vars) + list(model_vars), state[0] + weights)
        with keras.StatelessScope(state_mapping=mapping) as scope:
            outputs = run()
        new_state = []
        for v in sampler_vars:
            value = scope.get_current_value(v)
            new_state.append(v.value if value is None else value)
        return *outputs, new_state

    def _sample(self, logits, token_ids, index):
        """The sampler's next token from `logits`, penalized by `token_ids`
        before `index` (the row's prompt and reply so far)."""
        sampler = self.sampler
        logits = penalize_logits(
            logits, token_ids, index, self.repetition_penalty, self.no_repeat_ngram_size
        )
        return sampler.get_next_token(sampler.compute_probabilities(logits))

    def _put(self, padding_mask):
        def put(prompt, logits, index):
            """Samples the token at `index`, keeping prompt tokens (keras-hub's body)."""
            token = self._sample(logits, prompt, index)
            token = ops.where(
                padding_mask[:, index], prompt[:, index], ops.cast(token, prompt.dtype)
            )
            return ops.slice_update(prompt, [0, index], token[:, None])

        return put

    def _prefill(self, token_ids, padding_mask, end, prefill_length):
        """Runs the prompts (rounded to `prefill_length`) and puts the first
        new token, from the prompts' last hidden state, unless `end` (None:
        no end) is reached. Returns (token ids, cache, index)."""
        lm = self.causal_lm
        length = ops.shape(token_ids)[1]
        prompt = token_ids[:, :prefill_length]
        if self._prefill_takes_mask:
            hidden, cache = lm._build_cache(
                prompt, None, None, padding_mask[:, :prefill_length], None
            )
        else:
            hidden, cache = lm._build_cache(prompt)
        # Every keras-hub cache leaf is [..., length, heads, head_dim].
        pad = [(0, 0)] * 3 + [(0, length - prefill_length), (0, 0), (0, 0)]
        cache = tree.map_structure(lambda c: ops.pad(c, pad[-len(c.shape) :]), cache)
        index = ops.min(ops.sum(ops.cast(padding_mask, "int32"), axis=-1))
        first = lm.backbone.token_embedding(ops.take(hidden, index - 1, axis=1), reverse=True)
        put = self._put(padding_mask)
        if end is None:
            return put(token_ids, first, index), cache, index + 1
        started = index < end
        token_ids = ops.where(started, put(token_ids, first, index), token_ids)
        return token_ids, cache, ops.where(started, index + 1, index)

    def _body(self, padding_mask):
        """keras-hub's loop body: the next logits from the cache, then `put`."""
        lm, put = self.causal_lm, self._put(padding_mask)

        def next(prompt, cache, index):  # keras-hub's `next`
            batch = ops.shape(prompt)[0]
            kwargs = {}
            if self._update_mask:
                kwargs["cache_update_mask"] = ops.slice(~padding_mask, [0, index - 1], [batch, 1])
            logits, _, cache = lm.call_with_cache(
                ops.slice(prompt, [0, index - 1], [batch, 1]), cache, index - 1, **kwargs
            )
            return ops.squeeze(logits, axis=1), cache

        def body(prompt, cache, index):
            logits, cache = next(prompt, cache, index)
            return put(prompt, logits, index), cache, index + 1

        return body

    def _decode(self, stored, token_ids, padding_mask, end, prefill_length, stop_token_ids):
        length = ops.shape(token_ids)[1]

        def cond(prompt, cache, index):
            if stop_token_ids is None:
                return index < end
            ends = any_equal(prompt, stop_token_ids, ~padding_mask)
            return ops.logical_and(index < end, ~ops.all(ops.any(ends, axis=-1)))

        token_ids, cache, index = self._prefill(token_ids, padding_mask, end, prefill_length)
        token_ids, _, index = self.sampler.run_loop(
            cond,
            self._with_weights(self._body(padding_mask), stored),
            loop_vars=(token_ids, cache, index),
        )
        positions = ops.arange(length)[None, :]
        generated = ops.logical_and(~padding_mask, positions < index)
        if stop_token_ids is not None:
            ends = ops.cast(any_equal(token_ids, stop_token_ids, generated), "int32")
            generated = ops.logical_and(generated, (ops.cumsum(ends, axis=-1) - ends) == 0)
        return token_ids, ops.logical_or(padding_mask, generated)

    def _with_weights(self, body, stored):
        """`body` under a scope giving the model `stored` weights, `load`ed inside.

        Unlike `Sampler.run_loop(model=...)`, which carries the weights
        through the loop as they are (and XLA then copies the attention
        kernels at every step), the loop captures the stored copies.
        """
        sampler_vars, model_vars = self._variables()

        def wrapped(*loop_vars):
            mapping = [(v, v.value) for v in sampler_vars]  # run_loop's carried seeds
            mapping += [(v, load(v, value)) for v, value in zip(model_vars, stored)]
            with keras.StatelessScope(state_mapping=mapping) as scope:
                out = body(*loop_vars)
            for v in sampler_vars:
                value = scope.get_current_value(v)
                if value is not None:
                    v.assign(value)
            return out

        return wrapped


def _is_head_kernel(variable) -> bool:
    """An attention kernel: [heads, d, h] with several heads."""
    return len(variable.shape) == 3 and variable.shape[0] > 1


def store(kernel):
    """An attention kernel [heads, d, h] stored as [d, heads, h].

    XLA's dots want a kernel's contracted and kept dims each contiguous:
    given keras-hub's [heads, d, h], the loop would copy each attention
    kernel at every decode step (190 MB per token for Gemma 3 270M). Stored
    so between calls, and `load`ed back inside, the values are the same and
    the dots read the stored copy (94 MB more memory for Gemma 3 270M).
    """
    return ops.transpose(kernel, (1, 0, 2))


def load(variable, value):
    """`variable`'s value in its own shape: the inverse of `store` for kernels."""
    return ops.transpose(value, (1, 0, 2)) if _is_head_kernel(variable) else value


def penalize_logits(logits, token_ids, index, repetition_penalty=1.0, no_repeat_ngram_size=0):
    """`logits` [batch, vocab] for the token at `index`, penalized by each
    row's `token_ids` [batch, length] before `index`: its prompt and reply so
    far. Positions from `index` on (the buffer's padding, a longer prompt's
    rest) never count.

    The semantics are transformers' (tests/generation check them against its
    processors), so a setting means what it means in HF and llama.cpp:

    - `repetition_penalty` (CTRL's; `RepetitionPenaltyLogitsProcessor`): the
      logit of every token id present in the row is divided by the penalty
      when positive, multiplied by it when negative.
    - `no_repeat_ngram_size` n (`NoRepeatNGramLogitsProcessor`): a token that
      would complete an n-gram already present in the row gets -inf.

    Both off (1.0 and 0, Python values: compile-time switches) return
    `logits` itself: no op is added to the compiled loop.
    """
    if repetition_penalty == 1.0 and not no_repeat_ngram_size:
        return logits
    batch, vocab = logits.shape
    length = token_ids.shape[1]
    token_ids = jnp.asarray(token_ids, jnp.int32)
    rows = jnp.arange(batch)[:, None]

    def present(ids, where):
        """[batch, vocab]: which ids occur in a row at the `where` positions."""
        hits = jnp.zeros((batch, vocab), jnp.int32)
        return hits.at[rows, ids].max(where.astype(jnp.int32), mode="drop") > 0

    if repetition_penalty != 1.0:
        seen = present(token_ids, jnp.arange(length)[None, :] < index)
        penalty = jnp.asarray(repetition_penalty, logits.dtype)
        penalized = jnp.where(logits < 0, logits * penalty, logits / penalty)
        logits = jnp.where(seen, penalized, logits)
    n = no_repeat_ngram_size
    if n and length >= n:
        # The n-gram starting at j is (ids[j], ..., ids[j + n - 1]): it bans
        # its last token when it lies before `index` and its first n - 1
        # tokens equal the row's last n - 1 (ids[index - n + 1:index]).
        starts = length - n + 1
        matches = jnp.arange(starts)[None, :] + n <= index
        for k in range(n - 1):
            last = jax.lax.dynamic_slice_in_dim(token_ids, index - n + 1 + k, 1, axis=1)
            matches &= token_ids[:, k : k + starts] == last
        banned = present(token_ids[:, n - 1 :], matches)
        logits = jnp.where(banned, jnp.asarray(-jnp.inf, logits.dtype), logits)
    return logits
