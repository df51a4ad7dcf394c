"""The memory plan: what a LoRA run needs per device, computed before any weight loads.

`plan_memory` takes a keras-hub backbone config (a preset's config.json) and
builds the backbone *abstractly*: under `keras.StatelessScope(initialize_variables=False)`
every variable gets its exact path, shape and dtype but no memory (0.5 s for
Gemma 7B). LoRA is enabled the same way, so the trainable variables are the
run's own. Then, per device:

- weights: each variable's bytes by dtype; with `quantize`, every Dense /
  EinsumDense kernel (not the token embedding, which keras_ft keeps in float)
  is 1 byte (int8) or 1/2 byte (int4) per value plus a float32 scale per
  output channel. Under a model-parallel mesh each variable is divided by the
  devices its layout (the backbone's layout map, `mesh.fit_axes`) splits it over.
- load: keras quantizes built layers, so a quantized base first loads in
  float; the load peak is the float weights per device plus the largest
  single variable (read whole on the host before it is placed).
- LoRA weights, their gradients, AdamW's two moments (each in the LoRA
  variables' dtype, as Keras' optimizer creates them), and a gradient
  accumulator with `gradient_accumulation_steps` > 1. Replicated on every device.
- activations kept for the backward pass, per decoder layer and token (see
  `ACTIVATIONS`): with a frozen base, XLA keeps the inputs of the norms and
  the nonlinearities, the attention's q/k/v and probabilities, and the inputs
  of the LoRA matmuls; not the frozen matmuls' inputs (their input gradient
  needs only the weight). Split by the data axis (rows) and, for the heads and
  the feed-forward width, by the model axis.
- the output head: keras_ft's chunked loss keeps d loss / d hidden for every
  row and, while a chunk runs, [chunk_size, vocab] float32 logits and their
  softmax gradient (`keras_ft.model.loss`).
- the backward pass's working set (one layer's activations and its
  attention-score gradient, live while that layer runs backward) and the
  framework's overhead (`OVERHEAD`).

The figures were checked against peaks measured on CPU
(benchmarks/bench_memory_plan.py, benchmarks/RESULTS.md). They are an
estimate: XLA may fuse, rematerialize or keep more than this model says.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import random
from pathlib import Path
from typing import Any

import jax
import keras
import numpy as np
from keras.src.backend.common import global_state
from keras_hub.src.utils import preset_utils

from keras_ft.config import Config
from keras_ft.distribution.mesh import (
    DATA_AXIS,
    FIT_FRACTION,
    MODEL_AXIS,
    choose_mesh,
    fit_axes,
    layout_map,
    parse_mesh,
    shard_count,
)
from keras_ft.model.lora import enable_lora
from keras_ft.model.presets import resolve_preset

GIB = 1024**3
MIB = 1024**2

# Backbone configs of presets one may plan for without downloading them: the
# `config` of each keras-hub preset's published config.json (Kaggle model
# pages keras/gemma/keras/gemma_2b_en/2 and gemma_7b_en/2, keras/gemma3/keras/
# gemma3_270m/*, keras/llama3/keras/llama3.2_1b/*; keras-hub 0.32).
_GEMMA = dict(vocabulary_size=256000, head_dim=256, layer_norm_epsilon=1e-6, dropout=0)
# fmt: off
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {  # one published config per entry, compact
    "gemma_2b_en": {"class_name": "GemmaBackbone", "config": dict(
        _GEMMA, num_layers=18, num_query_heads=8, num_key_value_heads=1, hidden_dim=2048,
        intermediate_dim=32768)},
    "gemma_7b_en": {"class_name": "GemmaBackbone", "config": dict(
        _GEMMA, num_layers=28, num_query_heads=16, num_key_value_heads=16, hidden_dim=3072,
        intermediate_dim=49152)},
    "gemma3_270m": {"class_name": "Gemma3Backbone", "config": dict(
        vocabulary_size=262144, image_size=None, num_layers=18, num_query_heads=4,
        num_key_value_heads=1, hidden_dim=640, intermediate_dim=2048, head_dim=256,
        query_head_dim_normalize=True, use_query_key_norm=True, use_post_ffw_norm=True,
        use_post_attention_norm=True, attention_logit_soft_cap=None,
        final_logit_soft_cap=None, use_sliding_window_attention=True,
        sliding_window_size=512, local_rope_scaling_factor=1.0,
        global_rope_scaling_factor=1.0, vision_encoder=None, layer_norm_epsilon=1e-6,
        dropout=0)},
    "llama3.2_1b": {"class_name": "Llama3Backbone", "config": dict(
        vocabulary_size=128256, num_layers=16, num_query_heads=32, num_key_value_heads=8,
        hidden_dim=2048, intermediate_dim=8192, rope_max_wavelength=500000,
        rope_position_scaling_factor=1.0, rope_frequency_adjustment_factor=32.0,
        rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
        rope_pretraining_sequence_length=8192, layer_norm_epsilon=1e-5,
        tie_word_embeddings=True, dropout=0)},
}
# fmt: on

# Values kept per token and decoder layer for the backward pass, by width:
# hidden: the inputs of the layer's norms (Gemma 3: four; two elsewhere, the
#   others are then free) plus the normed inputs LoRA kernels read;
# query/kv: q and k before and after their norm / rotary, v;
# ffw: the gate's pre-activation, the up projection and the activation.
ACTIVATIONS = {"hidden": 5, "query": 2, "kv": 3, "ffw": 3}
# Framework memory beyond the arrays above, per device: XLA's compilation
# and compiled programs, runtime buffers, allocator slack. CPU: what a
# float32 Gemma 3 270M step peaked at beyond the rows above (2342 MiB
# measured, benchmarks/RESULTS.md); GPU (CUDA context, cuBLAS/cuDNN
# workspaces) and TPU (the runtime's reserve): estimates, not measured.
OVERHEAD = {"cpu": 640 * MIB, "gpu": 1 * GIB, "tpu": 512 * MIB}
CHUNK_SIZE = 128  # rows per output-head chunk: train.CausalLMTrainer's chunk_size


@dataclasses.dataclass(frozen=True)
class Device:
    """A kind of machine: `count` devices of `memory_bytes` each."""

    name: str
    count: int
    memory_bytes: float
    platform: str  # cpu | gpu | tpu


NAMED_DEVICES = (
    Device("T4 16 GB", 1, 15360 * MIB, "gpu"),  # what nvidia-smi reports usable
    Device("TPU v3-8", 8, 16 * GIB, "tpu"),  # 8 cores x 16 GiB HBM (Kaggle)
    Device("TPU v5e-8", 8, 16 * GIB, "tpu"),  # 8 chips x 16 GiB HBM
    Device("A100 80 GB", 1, 80 * GIB, "gpu"),
    Device("H100 80 GB", 1, 80 * GIB, "gpu"),
)


def host_memory_bytes() -> float:
    """This machine's RAM (MemTotal in /proc/meminfo; the page count elsewhere)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024.0
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def this_cpu() -> Device:
    """This machine's RAM as one device."""
    return Device("this CPU's RAM", 1, host_memory_bytes(), "cpu")


def present_devices() -> Device:
    """The devices JAX sees here: their count and the memory of one (the
    runtime's `bytes_limit`; simulated CPU devices share the host's RAM)."""
    devices = jax.devices()
    platform = devices[0].platform
    stats = {}
    try:
        stats = devices[0].memory_stats() or {}
    except (AttributeError, NotImplementedError, RuntimeError):  # some runtimes have none
        pass
    memory = stats.get("bytes_limit") or host_memory_bytes() / (
        len(devices) if platform == "cpu" else 1
    )
    kind = devices[0].device_kind if platform != "cpu" else "CPU"
    return Device(
        f"present: {len(devices)} x {kind}",
        len(devices),
        float(memory),
        platform if platform in OVERHEAD else "gpu",
    )


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device, by item; `settings` re-plans it (`replan`)."""

    rows: tuple[tuple[str, float, str], ...]  # (item, bytes per device, how)
    load_peak: float  # bytes per device while the weights load
    num_params: int  # the base model's parameters
    settings: dict  # plan_memory's arguments

    @property
    def mesh(self) -> tuple[int, int]:
        return self.settings["mesh"]

    @property
    def weights(self) -> float:
        return self.rows[0][1]

    @property
    def train_peak(self) -> float:
        return sum(b for _, b, _ in self.rows)

    @property
    def peak(self) -> float:
        return max(self.train_peak, self.load_peak)


def backbone_config(preset: str) -> dict[str, Any]:
    """A preset's backbone config (its config.json), reading no weights.

    `KNOWN_CONFIGS` answer for their keras-hub names without a download;
    any other preset is resolved (`model.presets.resolve_preset`: a local
    directory, a .gguf converted once, a reachable or cached hub preset) and
    only its config.json read.

    Raises:
        ValueError: a Transformers checkpoint (hf:// without a keras-hub
            config): its backbone is known only once converted.
    """
    if preset in KNOWN_CONFIGS:
        return KNOWN_CONFIGS[preset]
    config = preset_utils.load_json(resolve_preset(preset), preset_utils.CONFIG_FILE)
    if "class_name" not in config:
        raise ValueError(
            f"Preset {preset!r} is a Transformers checkpoint (its config.json "
            "has no keras-hub class_name); convert it to a keras-hub preset "
            "directory first, then plan that."
        )
    return config


def abstract_backbone(
    config: dict[str, Any],
    dtype: str | None = None,
    lora_rank: int = 0,
    lora_alpha: float = 0.0,
    lora_targets: str = "default",
):
    """The backbone `config` describes, with LoRA enabled, holding no memory.

    Its variables are deferred (`StatelessScope(initialize_variables=False)`)
    and taken off Keras' pending list, so nothing initializes them later.
    Built once per distinct arguments (re-plans reuse it).
    """
    return _abstract_backbone(
        json.dumps(config, sort_keys=True), dtype, lora_rank, float(lora_alpha), lora_targets
    )


@functools.lru_cache(maxsize=16)
def _abstract_backbone(config_json: str, dtype, lora_rank, lora_alpha, lora_targets):
    # Keras' initializers and seed generators draw their default seeds from
    # Python's `random` as they are made: planning must not move it, or a
    # run's seeded LoRA init would depend on whether its plan was cached.
    state = random.getstate()
    try:
        return _build_abstract_backbone(config_json, dtype, lora_rank, lora_alpha, lora_targets)
    finally:
        random.setstate(state)


def _build_abstract_backbone(config_json: str, dtype, lora_rank, lora_alpha, lora_targets):
    config = json.loads(config_json)
    config.setdefault("module", "keras_hub.src.models")
    if "registered_name" not in config:
        config["registered_name"] = f"keras_hub>{config['class_name']}"
    if dtype:
        config["config"]["dtype"] = dtype
    key = "uninitialized_variables"
    before = list(global_state.get_global_attribute(key, []) or [])
    try:
        with keras.StatelessScope(initialize_variables=False):
            backbone = keras.saving.deserialize_keras_object(config)
            if lora_rank:
                enable_lora(backbone, lora_rank, lora_alpha, lora_targets)
    finally:
        global_state.set_global_attribute(key, before)
    return backbone


ITEMSIZE = {
    "float32": 4,
    "bfloat16": 2,
    "float16": 2,
    "int8": 1,
    "int32": 4,
    "int64": 8,
    "float64": 8,
    "bool": 1,
    "uint8": 1,
}


def _std(dtype) -> str:
    return keras.backend.standardize_dtype(dtype)


def _nbytes(shape, dtype) -> float:
    return float(math.prod(shape)) * ITEMSIZE[_std(dtype)]


def _quantized_kernels(backbone) -> dict[str, int]:
    """path -> scale values of each kernel `quantize_backbone` quantizes
    (Dense / EinsumDense; the token embedding stays float): one float32
    scale per output value (the kernel's size over its reduced axes)."""
    out = {}
    for layer in backbone._flatten_layers(include_self=False):
        if not isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense)):
            continue
        kernel = layer._kernel
        if isinstance(layer, keras.layers.EinsumDense):
            inputs, rest = layer.equation.split(",")
            kernel_axes, output = rest.split("->")
            reduced = [i for i, a in enumerate(kernel_axes) if a in inputs and a not in output]
        else:
            reduced = [0]
        out[kernel.path] = math.prod(d for i, d in enumerate(kernel.shape) if i not in reduced)
    return out


def _layouts(backbone, mesh: tuple[int, int]) -> tuple[dict[str, int], callable]:
    """(mesh axis sizes, path+shape -> shards) under `mesh` as make_distribution lays it."""
    data, model = mesh
    sizes = {DATA_AXIS: data, MODEL_AXIS: model}
    if model == 1:
        return sizes, lambda path, shape: 1
    fake = np.array([f"plan:{i}" for i in range(data * model)]).reshape(data, model)
    device_mesh = keras.distribution.DeviceMesh((data, model), (DATA_AXIS, MODEL_AXIS), fake)
    layouts = layout_map(type(backbone), device_mesh)

    def shards(path, shape):
        layout = layouts[path]
        return 1 if layout is None else shard_count(fit_axes(layout.axes, shape, sizes), sizes)

    return sizes, shards


def plan_memory(
    config: dict[str, Any],
    *,
    dtype: str = "float32",
    quantize: str = "",
    lora_rank: int = 4,
    lora_alpha: float = 0.0,
    lora_targets: str = "default",
    batch_size: int = 1,
    sequence_length: int = 256,
    packing: bool = False,
    gradient_accumulation_steps: int = 1,
    mesh: tuple[int, int] = (1, 1),
    platform: str = "cpu",
    chunk_size: int = CHUNK_SIZE,
) -> MemoryPlan:
    """The memory plan of a LoRA run per device (see the module docstring).

    Args:
        config: a keras-hub backbone config (`backbone_config`).
        mesh: (data, model) devices.
        platform: cpu | gpu | tpu, for `OVERHEAD`.
        the rest: the Config fields of the same names.
    """
    settings = dict(
        dtype=dtype,
        quantize=quantize,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_targets=lora_targets,
        batch_size=batch_size,
        sequence_length=sequence_length,
        packing=packing,
        gradient_accumulation_steps=gradient_accumulation_steps,
        mesh=tuple(mesh),
        platform=platform,
        chunk_size=chunk_size,
    )
    backbone = abstract_backbone(config, dtype, lora_rank, lora_alpha, lora_targets)
    data, model = mesh
    _, shards = _layouts(backbone, mesh)
    lora = [v for v in backbone.weights if "lora_kernel" in v.path]
    base = [v for v in backbone.weights if "lora_kernel" not in v.path]
    quantized = _quantized_kernels(backbone) if quantize else {}
    per_value = {"int8": 1.0, "int4": 0.5}.get(quantize, 0.0)
    weights = float_weights = 0.0
    for v in base:
        split = shards(v.path, v.shape)
        float_weights += _nbytes(v.shape, v.dtype) / split
        if v.path in quantized:
            weights += math.ceil(math.prod(v.shape) * per_value) / split + quantized[v.path] * 4
        else:
            weights += _nbytes(v.shape, v.dtype) / split
    # keras-hub reads each stored array whole, then casts it to the variable's dtype.
    stored, target = _variable_dtype(_stored_dtype(config) or dtype), _variable_dtype(dtype)
    largest = max(math.prod(v.shape) for v in base)
    largest *= ITEMSIZE[stored] + (ITEMSIZE[target] if stored != target else 0)
    num_params = sum(math.prod(v.shape) for v in base)
    lora_bytes = sum(_nbytes(v.shape, v.dtype) for v in lora)
    lora_params = sum(math.prod(v.shape) for v in lora)

    c = backbone.get_config()
    hidden, layers, vocab = c["hidden_dim"], c["num_layers"], c["vocabulary_size"]
    heads = c.get("num_query_heads") or c.get("num_heads")
    kv_heads = c.get("num_key_value_heads") or heads
    head_dim = c.get("head_dim") or hidden // heads
    ffw = _ffw_width(backbone)
    # XLA on CPU computes bfloat16 (and int8) matmuls in float32: it keeps
    # float32 activations and a 4-byte copy of every weight stored narrower
    # (measured: a bfloat16 run peaks above a float32 one by about its own
    # weights; benchmarks/RESULTS.md). GPUs and TPUs compute them natively.
    on_cpu = platform == "cpu"
    act = 4 if on_cpu or dtype == "float32" else 2
    rows = math.ceil(batch_size / data)  # per device
    tokens = rows * sequence_length
    split_heads = model if heads % model == 0 else 1
    split_ffw = model if ffw % model == 0 else 1
    per_token = (
        ACTIVATIONS["hidden"] * hidden
        + ACTIVATIONS["query"] * heads * head_dim / split_heads
        + ACTIVATIONS["kv"] * kv_heads * head_dim / (model if kv_heads % model == 0 else 1)
        + ACTIVATIONS["ffw"] * ffw / split_ffw
    )
    scores = rows * heads / split_heads * sequence_length**2  # attention probabilities
    layer_bytes = tokens * per_token * act + scores * act
    # The [rows, length, length] mask keras-hub builds (int32/bool) is shared by all layers;
    # packing adds the segment mask keras_ft builds from the segment ids (model.packing).
    masks = rows * sequence_length**2 * (2 if packing else 1)
    activations = layers * layer_bytes + masks
    head_vocab = vocab / (model if vocab % model == 0 else 1)
    head_trains = any(v.path.startswith("token_embedding/") for v in lora)
    head_rows = min(chunk_size, tokens)
    head = head_rows * head_vocab * 4 * 3  # logits, softmax, its gradient: float32
    head_saved = tokens * hidden * act  # d loss / d hidden, kept for the backward pass
    if head_trains:  # the head's float32 gradient, summed chunk by chunk
        head += head_vocab * hidden * 4
    working = layer_bytes + scores * 4  # one layer backward: its activations, d scores
    lora_state = lora_bytes * (4 + (gradient_accumulation_steps > 1))
    upcast = 0.0
    if on_cpu:
        upcast = sum(
            math.prod(v.shape) * 4 / shards(v.path, v.shape)
            for v in base
            if v.path in quantized or ITEMSIZE[_std(v.dtype)] < 4
        )
    table = (
        ("weights", weights, _weights_how(dtype, quantize, mesh, num_params)),
        (
            "float32 copies of weights",
            upcast,
            "XLA on CPU computes bfloat16 and int8 matmuls in float32" if upcast else "none",
        ),
        (
            "LoRA weights",
            lora_bytes,
            f"{lora_params:,} values, rank {lora_rank}, {lora_targets}, replicated",
        ),
        (
            "LoRA gradients + AdamW moments",
            lora_state - lora_bytes,
            "gradient + 2 moments" + (" + accumulator" if gradient_accumulation_steps > 1 else ""),
        ),
        (
            "activations kept for backward",
            activations + head_saved,
            f"{layers} layers x {rows} rows x {sequence_length} tokens"
            + (" (packed)" if packing else "")
            + f", {act}-byte values"
            + (f", split by data axis {data}" if data > 1 else ""),
        ),
        (
            "output-head chunk",
            head,
            f"[{head_rows}, {int(head_vocab)}] float32 logits, softmax, "
            "gradient" + (", + head gradient" if head_trains else ""),
        ),
        ("backward working set", working, "one layer's activations + score gradients"),
        ("framework overhead", OVERHEAD.get(platform, OVERHEAD["gpu"]), f"{platform} runtime"),
    )
    load_peak = float_weights + (largest if platform == "cpu" or data * model == 1 else 0)
    return MemoryPlan(rows=table, load_peak=load_peak, num_params=num_params, settings=settings)


def _variable_dtype(dtype: str) -> str:
    return "float32" if dtype.startswith("mixed_") else dtype


def _stored_dtype(config: dict[str, Any]) -> str | None:
    """The dtype the preset's weights were saved in (config.json's policy)."""
    policy = config.get("config", {}).get("dtype")
    if isinstance(policy, dict):
        policy = policy.get("config", {}).get("name")
    return policy if isinstance(policy, str) and _variable_dtype(policy) in ITEMSIZE else None


def _ffw_width(backbone) -> int:
    """The feed-forward width of one matrix (keras-hub's Gemma halves
    `intermediate_dim` per gate): read from a layer's kernel."""
    for layer in backbone._flatten_layers(include_self=False):
        if layer.name in ("ffw_gating", "feedforward_gate_dense"):
            return int(layer._kernel.shape[-1])
    return int(backbone.get_config().get("intermediate_dim", 4 * backbone.hidden_dim))


def _weights_how(dtype: str, quantize: str, mesh, num_params: int) -> str:
    stored = "float32" if dtype == "mixed_bfloat16" else dtype
    how = f"{num_params / 1e6:,.0f} M values, {stored}"
    if quantize:
        how += f", {quantize} kernels + float32 scales"
    if mesh[1] > 1:
        how += f", large kernels split over {mesh[0] * mesh[1]} devices (layout map)"
    return how


def replan(plan: MemoryPlan, config: dict[str, Any], **changes) -> MemoryPlan:
    """`plan` again with some settings changed (e.g. batch_size=1, quantize="int8")."""
    return plan_memory(config, **{**plan.settings, **changes})


def plan_for_config(
    cfg: Config,
    config: dict[str, Any] | None = None,
    mesh: tuple[int, int] | None = None,
    device: Device | None = None,
) -> MemoryPlan:
    """The plan of `cfg`'s run on `device` (default: the devices present)."""
    config = config or backbone_config(cfg.preset)
    device = device or present_devices()
    if mesh is None:
        mesh = resolve_mesh(cfg, config, device)[:2]
    return plan_memory(
        config,
        dtype=cfg.dtype,
        quantize=cfg.quantize,
        lora_rank=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_targets=cfg.lora_targets,
        batch_size=cfg.batch_size,
        sequence_length=cfg.sequence_length,
        packing=cfg.packing,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        mesh=mesh,
        platform=device.platform,
    )


def resolve_mesh(cfg: Config, config: dict[str, Any], device: Device) -> tuple[int, int, str]:
    """(data, model, reason): `cfg.mesh` as given, or `auto`'s choice.

    `auto` is `mesh.choose_mesh` fed with the data-parallel plan: its
    weights, and the rest of its step. The data axis must divide the batch:
    with fewer rows than devices, data-parallel uses the largest divisor of
    both and the rest of the devices go to the model axis.
    """
    given = parse_mesh(cfg.mesh)
    if given:
        return (*given, f"mesh {cfg.mesh} set in the config")
    n = device.count
    data = math.gcd(n, cfg.batch_size)
    dp = plan_for_config(cfg, config, (data, n // data), device)
    weights = dp.weights
    d, m, reason = choose_mesh(
        n, dp.num_params, weights / max(dp.num_params, 1), device.memory_bytes, dp.peak - weights
    )
    if d > 1 and data < n:
        d, m = data, n // data
        reason += f"; batch_size {cfg.batch_size} splits over {data} of them, so {d}x{m}"
    return d, m, reason


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether a plan fits a device, and if not the cheapest change that does."""

    device: Device
    plan: MemoryPlan
    fits: bool
    fix: str = ""  # the cheapest change that fits, when it does not

    def __str__(self) -> str:
        need, have = self.plan.peak, self.device.memory_bytes
        mesh = "x".join(map(str, self.plan.mesh))
        head = (
            f"{self.device.name} ({self.device.count} x {have / GIB:.1f} GiB): "
            f"{'fits' if self.fits else 'does NOT fit'}, {need / GIB:.2f} GiB per "
            f"device at mesh {mesh} ({need / have:.0%} of one device)"
        )
        return head + (f"; {self.fix}" if self.fix else "")


def fits(plan: MemoryPlan, device: Device, config: dict[str, Any]) -> Verdict:
    """Whether `plan` fits `device` within `mesh.FIT_FRACTION` of its memory.

    A plan for another device count is re-planned for `device` (its mesh
    chosen as `auto` would). When it does not fit, `fix` names the cheapest
    change that does, found by re-planning (`cheapest_fix`).
    """
    plan = _for_device(plan, device, config)
    ok = plan.peak <= FIT_FRACTION * device.memory_bytes
    return Verdict(device, plan, ok, "" if ok else cheapest_fix(plan, device, config))


def _for_device(plan: MemoryPlan, device: Device, config) -> MemoryPlan:
    data, model = plan.mesh
    if data * model == device.count and plan.settings["platform"] == device.platform:
        return plan
    cfg = Config(
        **{k: v for k, v in plan.settings.items() if k not in ("mesh", "platform", "chunk_size")}
    )
    mesh = resolve_mesh(cfg, config, device)[:2]
    return replan(plan, config, mesh=mesh, platform=device.platform)


def cheapest_fix(plan: MemoryPlan, device: Device, config: dict[str, Any]) -> str:
    """The first change, in this order, whose re-plan fits `device`:
    a model-parallel mesh 1xN; a smaller batch (halved, with gradient
    accumulation keeping the effective batch); bfloat16 weights (from
    float32); int8, then int4 kernels; then pairs of these; else a sentence
    that none does (with the smallest plan found)."""
    s = plan.settings
    budget = FIT_FRACTION * device.memory_bytes
    single = []
    if device.count > 1 and s["mesh"] != (1, device.count):
        single.append(({"mesh": (1, device.count)}, f"a model-parallel mesh 1x{device.count}"))
    batch = s["batch_size"]
    while batch > 1:
        batch //= 2
        accumulate = s["gradient_accumulation_steps"] * s["batch_size"] // batch
        single.append(
            (
                {"batch_size": batch, "gradient_accumulation_steps": accumulate},
                (
                    f"batch_size {batch} with gradient_accumulation_steps {accumulate} "
                    "(the same effective batch)"
                ),
            )
        )
    if s["dtype"] == "float32":
        single.append(({"dtype": "bfloat16"}, "dtype bfloat16"))
    for mode in ("int8", "int4"):
        if s["quantize"] != mode and not (s["quantize"] == "int4" and mode == "int8"):
            single.append(({"quantize": mode}, f"quantize {mode}"))
    candidates = single + [
        ({**a, **b}, f"{ta} and {tb}")
        for i, (a, ta) in enumerate(single)
        for b, tb in single[i + 1 :]
        if not set(a) & set(b)
    ]
    best = plan
    for change, text in candidates:
        if "mesh" not in change and s["mesh"][0] * s["mesh"][1] != device.count:
            change = {**change, "mesh": s["mesh"]}
        trial = replan(plan, config, **change)
        if trial.peak <= budget:
            return f"fits with {text} ({trial.peak / GIB:.2f} GiB per device)"
        best = min(best, trial, key=lambda p: p.peak)
    return (
        f"no single change or pair fits (the smallest found: {best.peak / GIB:.2f} GiB "
        f"per device with {_diff(plan, best) or 'the settings as they are'}); use "
        "devices with more memory, more devices, or a shorter sequence_length"
    )


def _diff(plan: MemoryPlan, other: MemoryPlan) -> str:
    return ", ".join(f"{k} {v}" for k, v in other.settings.items() if plan.settings[k] != v)


def format_plan(plan: MemoryPlan) -> str:
    """The plan as a text table: item, GiB per device, how it was counted."""
    mesh = "x".join(map(str, plan.mesh))
    width = max(len(name) for name, _, _ in plan.rows)
    lines = [
        f"Memory plan per device (mesh {mesh}, {plan.settings['platform']}):",
        f"  {'item':<{width}}  {'GiB':>8}  how",
    ]
    lines += [f"  {name:<{width}}  {size / GIB:8.3f}  {how}" for name, size, how in plan.rows]
    lines.append(f"  {'training peak':<{width}}  {plan.train_peak / GIB:8.3f}")
    lines.append(
        f"  {'loading peak':<{width}}  {plan.load_peak / GIB:8.3f}  "
        + ("float weights before quantizing" if plan.settings["quantize"] else "weights")
        + " + the largest variable read whole (and cast)"
    )
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """A run's mesh, its memory plan and where it fits: everything decided
    before a weight loads (`plan_run`)."""

    preset: str
    config: dict
    mesh: tuple[int, int]
    reason: str  # why this mesh
    plan: MemoryPlan
    verdict: Verdict  # on the target device (the devices present by default)
    others: tuple[Verdict, ...]  # the named devices and this CPU's RAM

    def __str__(self) -> str:
        lines = [
            f"Preset {self.preset}: {self.config['class_name']}, "
            f"{self.plan.num_params / 1e6:,.0f} M parameters",
            f"Mesh {self.mesh[0]}x{self.mesh[1]}: {self.reason}",
            format_plan(self.plan),
            "Fits:",
            f"  {self.verdict}",
        ]
        lines += [f"  {v}" for v in self.others]
        return "\n".join(lines)


def plan_run(cfg: Config, device: Device | None = None, config: dict | None = None) -> RunPlan:
    """The mesh (`cfg.mesh`, or `auto`'s choice and why), the memory plan and
    the fit verdicts of `cfg`'s run on `device` (default: the devices present),
    from the preset's config.json alone. `keras-ft plan`, the start of every
    run and the Kaggle scripts' dry runs all print this."""
    config = config or backbone_config(cfg.preset)
    device = device or present_devices()
    data, model, reason = resolve_mesh(cfg, config, device)
    plan = plan_for_config(cfg, config, (data, model), device)
    others = [] if device.platform == "cpu" else [this_cpu()]
    others += [d for d in NAMED_DEVICES if d != device]
    return RunPlan(
        cfg.preset,
        config,
        (data, model),
        reason,
        plan,
        fits(plan, device, config),
        tuple(fits(plan, d, config) for d in others),
    )
