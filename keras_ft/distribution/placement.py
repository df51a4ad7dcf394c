"""`setup(cfg, preset_dir)`: the one start of every run on one device or many.

Before any weight loads, in this order:

1. `mesh.initialize(cfg)`: `keras.distribution.initialize` in a multi-host
   run (nothing in a single process); then JAX's persistent compilation
   cache (`compile_cache.enable`);
2. `memory.plan_run(cfg)`: the mesh (`cfg.mesh`, or `auto`'s choice and why)
   and the memory plan per device, both logged; a plan that does not fit
   the devices present stops the run here with a ValueError naming the
   cheapest change that would fit;
3. `keras.distribution.set_distribution(mesh.make_distribution(...))`, with
   the backbone class the preset's config.json names (its layout map):
   variables made from here on are placed sharded as they load.

`finetune`, `keras-ft evaluate` and `keras-ft generate` call it (through
`placed`, which puts the caller's distribution back afterwards) before they
load a model. On one device (a 1x1 mesh) it sets no distribution, so the
run is exactly what it was before meshes existed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator

import jax
import keras

from keras_ft.config import Config
from keras_ft.distribution import compile_cache, memory
from keras_ft.distribution.mesh import (
    DataShard,
    data_shard,
    describe,
    initialize,
    make_distribution,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a run computes: its plan, its Keras distribution, this host's rows."""

    plan: memory.RunPlan
    distribution: keras.distribution.Distribution | None  # None: one device
    shard: DataShard  # the rows of each global batch this process reads

    @property
    def mesh(self) -> tuple[int, int]:
        return self.plan.mesh


def setup(cfg: Config, preset_dir: str | None = None, *, check_fit: bool = True) -> Placement:
    """Initializes multi-host, plans the run, sets its distribution (see module doc).

    Args:
        cfg: the run's Config (`mesh`, the multi-host settings, and what the
            plan needs: preset, dtype, quantize, LoRA, batch, sequence length).
        preset_dir: `resolve_preset(cfg.preset)` when the caller has it (its
            config.json is read, no weights); None resolves `cfg.preset`.
        check_fit: refuse a plan that does not fit the devices present.

    Returns:
        The `Placement`; `keras.distribution.distribution()` is its
        distribution until the next `setup` (or `set_distribution(None)`).

    Raises:
        ValueError: the plan does not fit (naming the cheapest change that
            does), a mesh that is not the devices present, a model-parallel
            mesh for a backbone without a layout map.
    """
    initialize(cfg)
    compile_cache.enable(cfg)  # before anything compiles
    config = memory.backbone_config(preset_dir or cfg.preset)
    plan = memory.plan_run(cfg, config=config)
    log.info("Mesh %dx%d: %s", *plan.mesh, plan.reason)
    log.info("%s", memory.format_plan(plan.plan))
    log.info("Fits: %s", plan.verdict)
    if check_fit and not plan.verdict.fits:
        raise ValueError(
            f"The run does not fit the devices present: {plan.verdict}. Nothing was "
            f"loaded. Change the settings as named (or set `mesh`, `batch_size`, "
            f"`dtype`, `quantize`), or run `keras-ft plan` to compare others."
        )
    backbone_cls = keras.saving.get_registered_object(
        config.get("registered_name") or f"keras_hub>{config['class_name']}"
    )
    distribution = make_distribution(cfg, backbone_cls, plan.mesh)
    if distribution is not None and jax.process_count() > 1:
        # Each host's BatchSequence already serves only its rows (`shard`).
        distribution.auto_shard_dataset = False
    keras.distribution.set_distribution(distribution)
    log.info("Distribution: %s", describe(distribution))
    shard = data_shard(jax.process_count(), jax.process_index(), plan.mesh[0])
    if shard.count > 1:
        log.info(
            "Process %d reads part %d of %d of every batch.",
            jax.process_index(),
            shard.index + 1,
            shard.count,
        )
    return Placement(plan, distribution, shard)


@contextlib.contextmanager
def kept_distribution() -> Iterator[None]:
    """A block whose `set_distribution` calls end with it: the one before is restored."""
    previous = keras.distribution.distribution()
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


@contextlib.contextmanager
def placed(cfg: Config, preset_dir: str | None = None, **kwargs) -> Iterator[Placement]:
    """`setup(cfg, preset_dir)` for a block, inside `kept_distribution`."""
    with kept_distribution():
        yield setup(cfg, preset_dir, **kwargs)
