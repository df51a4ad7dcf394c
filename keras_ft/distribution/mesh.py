"""Device meshes and Keras distributions: data and model parallelism on JAX's SPMD.

Everything here is Keras' own distribution API (`keras.distribution.DeviceMesh`,
`DataParallel`, `ModelParallel` with the backbone's `get_layout_map`,
`keras.distribution.initialize`); keras_ft adds the choice of mesh, one rule
for kernels a mesh axis does not divide, and which part of the data a host reads.

A run sets things up in this order, before any weight exists:

    initialize(cfg)                            # multi-host only; before any JAX work
    shape = ...                                # parse_mesh(cfg.mesh), or memory.resolve_mesh
    distribution = make_distribution(cfg, backbone_cls, shape)
    keras.distribution.set_distribution(distribution)   # None: one device
    causal_lm = CausalLM.from_preset(...)      # variables created sharded, then loaded
    quantize_backbone(...); enable_lora(...)   # new variables follow the same layouts

The mesh has two axes, `DATA_AXIS` ("batch", the name keras-hub's layout maps
use for data) and `MODEL_AXIS` ("model"). A mesh DxM with M == 1 is
data-parallel: weights replicated on D devices, each global batch split D ways.
M > 1 is model-parallel: the backbone's layout map splits its large kernels
(the token embedding, attention and feed-forward kernels) over the model axis
and, as keras-hub's maps do, over the data axis as well, so each of the D x M
devices holds 1/(D x M) of each such kernel; each batch is split D ways. LoRA
kernels, norms and biases match no pattern of the map and are replicated.
"""

from __future__ import annotations

import logging
import math
import re
from typing import NamedTuple

import jax
import keras
import keras_hub
import numpy as np

from keras_ft.config import MESH_PATTERN, Config

log = logging.getLogger(__name__)

DATA_AXIS = "batch"  # keras-hub's get_layout_map(data_parallel_dim_name="batch")
MODEL_AXIS = "model"
# `choose_mesh`: one device must hold the model's training memory with this
# share of its memory to spare (XLA's scratch buffers, fragmentation, the
# estimate's own error).
FIT_FRACTION = 0.8


def parse_mesh(spec: str) -> tuple[int, int] | None:
    """ "DxM" -> (data, model); "auto" -> None.

    Raises:
        ValueError: a spec of neither form, naming `mesh` and the accepted forms.
    """
    if spec == "auto":
        return None
    match = re.fullmatch(MESH_PATTERN, spec)
    if not match:
        Config(mesh=spec)  # raises the one message for a bad mesh
    return int(match.group(1)), int(match.group(2))


def choose_mesh(
    num_devices: int,
    num_params: int,
    bytes_per_param: float,
    device_memory_bytes: float,
    other_bytes: float = 0.0,
) -> tuple[int, int, str]:
    """The `auto` mesh: (data, model, reason).

    Rule: data-parallel across all devices (Nx1) when one device holds the
    weights (num_params x bytes_per_param) plus the rest of a step's memory
    (`other_bytes`: LoRA weights, their gradients and AdamW moments,
    activations, the loss chunk, overhead; see `memory.plan_memory`) within
    `FIT_FRACTION` (80 %) of its memory; else model-parallel across all
    devices (1xN), which splits the large kernels N ways. One device: 1x1.
    E.g. on a TPU v3-8 (8 x 16 GB) Gemma 7B in bfloat16 (17 GB of weights)
    is 1x8, Gemma 2B (5 GB) and Gemma 3 270M are 8x1.
    """
    weights = num_params * bytes_per_param
    need = weights + other_bytes
    budget = FIT_FRACTION * device_memory_bytes
    sizes = (
        f"weights {weights / 1e9:.2f} GB + the rest of a step {other_bytes / 1e9:.2f} GB "
        f"{'<=' if need <= budget else '>'} {FIT_FRACTION:.0%} of one device's "
        f"{device_memory_bytes / 1e9:.1f} GB"
    )
    if num_devices <= 1:
        return 1, 1, f"one device ({sizes})"
    if need <= budget:
        return (
            num_devices,
            1,
            (f"data-parallel over {num_devices} devices: one holds the model ({sizes})"),
        )
    return (
        1,
        num_devices,
        (f"model-parallel over {num_devices} devices: one cannot hold the model ({sizes})"),
    )


def layout_map(backbone_cls, device_mesh: keras.distribution.DeviceMesh):
    """The backbone's `get_layout_map` for `device_mesh` (axes DATA_AXIS, MODEL_AXIS).

    keras-hub's Gemma3Backbone has no map of its own; its variables have the
    paths of GemmaBackbone's (`decoder_block_N/attention/query/kernel`, ...),
    so Gemma's map is used for it.

    Raises:
        ValueError: a backbone without a layout map (use an Nx1 mesh).
    """
    source = backbone_cls
    if not hasattr(source, "get_layout_map"):
        if issubclass(backbone_cls, keras_hub.models.Gemma3Backbone):
            source = keras_hub.models.GemmaBackbone
        else:
            raise ValueError(
                f"{backbone_cls.__name__} has no layout map (keras-hub's get_layout_map), "
                "so it cannot be split over a model axis. Use a data-parallel mesh "
                "(`mesh` Nx1, e.g. 8x1) or 1x1."
            )
    return source.get_layout_map(
        device_mesh, model_parallel_dim_name=MODEL_AXIS, data_parallel_dim_name=DATA_AXIS
    )


def fit_axes(axes, shape, mesh_shape: dict[str, int]) -> tuple:
    """`axes` (a layout's mesh axis per dimension) with each axis dropped from a
    dimension it does not divide: that dimension is then replicated.

    jax refuses an uneven split, and keras-hub's maps split attention kernels'
    head dimension over the model axis: Gemma 2B's single key/value head,
    (1, 2048, 256), cannot be split 8 ways, so it is replicated along heads.
    """
    return tuple(
        None if axis is None or dim % mesh_shape[axis] else axis for axis, dim in zip(axes, shape)
    )


class FittedModelParallel(keras.distribution.ModelParallel):
    """`keras.distribution.ModelParallel` whose variable layouts go through
    `fit_axes`, so a layout map written for one model size loads any size."""

    def get_variable_layout(self, variable):
        layout = super().get_variable_layout(variable)
        mesh_shape = dict(zip(self.device_mesh.axis_names, self.device_mesh.shape))
        axes = fit_axes(layout.axes, variable.shape, mesh_shape)
        if axes == tuple(layout.axes):
            return layout
        log.debug("%s %s: layout %s fitted to %s", variable.path, variable.shape, layout.axes, axes)
        return keras.distribution.TensorLayout(axes, self.device_mesh)


def make_distribution(cfg: Config, backbone_cls, shape: tuple[int, int] | None = None):
    """The Keras distribution for a mesh, or None for one device.

    Args:
        cfg: the run's Config; `cfg.mesh` is used unless `shape` is given.
        backbone_cls: the preset's backbone class (its layout map shards).
        shape: (data, model), e.g. `memory.resolve_mesh`'s choice for "auto".

    Returns:
        None for 1x1; `DataParallel` over D devices for Dx1;
        `FittedModelParallel` with the backbone's layout map for DxM, M > 1.

    Raises:
        ValueError: `mesh` "auto" without a shape, a mesh that is not the
            number of devices present, or a backbone without a layout map.
    """
    shape = shape or parse_mesh(cfg.mesh)
    if shape is None:
        raise ValueError(
            "`mesh` 'auto' must be resolved first (memory.resolve_mesh, or "
            "choose_mesh); or set `mesh` to DxM."
        )
    data, model = shape
    devices = keras.distribution.list_devices()
    if data * model == 1:
        return None
    if data * model != len(devices):
        raise ValueError(
            f"`mesh` {data}x{model} needs {data * model} devices; {len(devices)} are "
            f"present ({devices[0].split(':')[0]}). Use a mesh whose product is "
            f"{len(devices)} (e.g. {len(devices)}x1 or 1x{len(devices)}), 1x1 or 'auto'. "
            f"Received: mesh={cfg.mesh!r}"
        )
    if model == 1:
        mesh = keras.distribution.DeviceMesh((data,), (DATA_AXIS,), devices)
        return keras.distribution.DataParallel(device_mesh=mesh)
    mesh = keras.distribution.DeviceMesh(
        (data, model), (DATA_AXIS, MODEL_AXIS), np.array(devices).reshape(data, model)
    )
    return FittedModelParallel(layout_map=layout_map(backbone_cls, mesh), batch_dim_name=DATA_AXIS)


def describe(distribution) -> str:
    """One line for the log: the mesh, the kind of parallelism and the devices."""
    if distribution is None:
        return "one device (mesh 1x1)"
    mesh = distribution.device_mesh
    shape = "x".join(map(str, mesh.shape)) + ("x1" if len(mesh.shape) == 1 else "")
    kind = (
        "data-parallel"
        if isinstance(distribution, keras.distribution.DataParallel)
        else "model-parallel (layout map)"
    )
    return f"mesh {shape} ({DATA_AXIS} x {MODEL_AXIS}), {kind}, {mesh.devices.size} devices"


def initialize(cfg: Config) -> bool:
    """`keras.distribution.initialize` for a multi-host run; call it first.

    Called only when `cfg.num_processes` > 1 or `cfg.coordinator_address` is
    set (before any JAX computation, as JAX requires). Without an address,
    JAX detects the coordinator and this process's id (Cloud TPU, SLURM).

    Returns:
        Whether it initialized (False: a single process, nothing done).
    """
    if cfg.num_processes <= 1 and not cfg.coordinator_address:
        return False
    if jax.distributed.is_initialized():
        return True
    explicit = bool(cfg.coordinator_address) or cfg.process_id > 0
    keras.distribution.initialize(
        cfg.coordinator_address or None,
        cfg.num_processes or None,
        cfg.process_id if explicit else None,
    )
    log.info(
        "Process %d of %d (coordinator %s)",
        jax.process_index(),
        jax.process_count(),
        cfg.coordinator_address or "detected",
    )
    return True


def check_same_on_every_process(value: int, what: str) -> None:
    """Refuses a multi-host run whose processes disagree on `value` (e.g. the
    step they resume from: each must read the writer's checkpoint).

    A collective (every process must call it); nothing in a single process.

    Raises:
        ValueError: naming `what`, this process's value and process 0's.
    """
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils  # heavy: jax.experimental, multi-host only

    first = int(multihost_utils.broadcast_one_to_all(np.asarray(value, np.int64)))
    if first != value:
        raise ValueError(
            f"Process {jax.process_index()} has {what} {value}, process 0 has {first}. "
            "Every process of a multi-host run must read the same run directory: put "
            "`output_dir` on storage all hosts share (its checkpoints are read by all)."
        )


def is_writer() -> bool:
    """Whether this process writes checkpoints, metrics, events and the
    adapter: process 0 (the only one in a single-process run)."""
    return jax.process_index() == 0


class DataShard(NamedTuple):
    """Which part of each global batch one host reads.

    A global batch of B rows is split into `count` equal, consecutive parts
    and this host reads part `index` (rows index*B/count to (index+1)*B/count):
    what `jax.make_array_from_process_local_data` (Keras' `distribute_data_input`)
    places on this host's devices. Hosts that share a model replica
    (processes > data axis) read the same part.
    """

    index: int
    count: int

    def rows(self, global_batch_size: int) -> slice:
        """The rows of a global batch this host reads.

        Raises:
            ValueError: a batch that does not split into `count` equal parts.
        """
        if global_batch_size % self.count:
            raise ValueError(
                f"`batch_size` {global_batch_size} must be a multiple of {self.count} "
                f"(the hosts reading different data) so each reads an equal part."
            )
        size = global_batch_size // self.count
        return slice(self.index * size, (self.index + 1) * size)


def data_shard(num_processes: int, process_id: int, data_axis: int | None = None) -> DataShard:
    """This host's `DataShard`; keras' `Distribution.data_shard_id` rule.

    Args:
        num_processes: processes in the run (1 = single host).
        process_id: this process's index.
        data_axis: devices along the mesh's data axis (the number of model
            replicas); None = num_processes (one part per host).

    With data_axis >= num_processes each host reads its own 1/num_processes
    of every batch; with fewer replicas than hosts, num_processes/data_axis
    consecutive hosts hold one replica and read the same 1/data_axis.
    """
    processes = max(num_processes, 1)
    replicas = data_axis or processes
    if not 0 <= process_id < processes:
        raise ValueError(f"process_id {process_id} must be in [0, {processes - 1}].")
    if replicas >= processes:
        if replicas % processes:
            raise ValueError(
                f"The data axis ({replicas} devices) must be a multiple of "
                f"the number of processes ({processes})."
            )
        return DataShard(process_id, processes)
    if processes % replicas:
        raise ValueError(
            f"The number of processes ({processes}) must be a multiple of "
            f"the data axis ({replicas} devices)."
        )
    return DataShard(process_id // (processes // replicas), replicas)


def shard_count(axes, mesh_shape: dict[str, int]) -> int:
    """Into how many pieces a layout with these axes splits an array."""
    return math.prod(mesh_shape[a] for a in axes if a is not None)
