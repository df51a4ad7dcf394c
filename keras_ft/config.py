"""The one frozen `Config` of a fine-tuning run, and how it is loaded.

Precedence: dataclass defaults < experiment YAML file < CLI flags.
Every field has a CLI flag generated from it (`lora_rank` <-> `--lora-rank`).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import typing
from pathlib import Path
from typing import Any, Mapping

import yaml

from keras_ft.files import write_json
from keras_ft.templates import TEMPLATES

EMBEDDED_PRESET = "embedded:gemma3_270m"  # Gemma 3 270M shipped on PyPI as GGUF
SAMPLERS = ("greedy", "top_k", "top_p", "random")
LORA_TARGET_SETS = ("default", "attention", "all")
DTYPES = ("float32", "bfloat16", "mixed_bfloat16")
# Refused with a reason: float16 training needs loss scaling, which keras_ft does not do.
UNSCALED_DTYPES = ("float16", "mixed_float16")
QUANTIZE_MODES = ("", "int8", "int4")
LR_SCHEDULES = ("constant", "cosine", "linear")
# `mesh`: "auto", or "DxM": D devices along the data axis times M along the model axis.
MESH_PATTERN = r"([1-9][0-9]*)x([1-9][0-9]*)"
DEFAULT_SAMPLE_PROMPTS = (
    "How do I make a cup of tea?",
    "Explain what a compiler does.",
    "Write a haiku about autumn.",
)


# How replies are sampled: the fields `generate`, `chat` and `serve` take as
# flags and a chat request may change.
SAMPLER_FIELDS = (
    "sampler",
    "top_k",
    "top_p",
    "temperature",
    "max_new_tokens",
    "seed",
    "repetition_penalty",
    "no_repeat_ngram_size",
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Everything that defines a fine-tuning run. See `load_config`.

    Distribution: `mesh` "DxM" is both the device mesh and the choice between
    data and model parallelism, so there is no separate switch: M == 1 is
    data-parallel (`keras.distribution.DataParallel` over D devices, weights
    replicated, each batch split D ways); M > 1 is model-parallel
    (`ModelParallel` with the backbone's layout map: its large kernels split
    over the M x D devices, each batch split D ways). "1x1" is one device;
    "auto" lets `keras_ft.distribution.choose_mesh` pick from the device count
    and the model's size. `coordinator_address`, `num_processes` and
    `process_id` go to `keras.distribution.initialize` in a multi-host run
    (`num_processes` > 1); without `coordinator_address`, JAX detects the
    coordinator and the process id (Cloud TPU, SLURM, ...).
    """

    # model
    preset: str = EMBEDDED_PRESET  # keras-hub name, kaggle://, hf://, preset dir, .gguf
    dtype: str = "float32"  # float32 | bfloat16 | mixed_bfloat16 (float16: refused)
    quantize: str = ""  # QLoRA: "" | int8 | int4; frozen base quantized before LoRA
    # lora
    lora_rank: int = 4  # LoRA rank on the backbone (> 0)
    lora_alpha: float = 0.0  # LoRA scale is alpha/rank; 0 = rank (keras-hub's 1)
    lora_targets: str = "default"  # default (query,value) | attention | all | a,b
    # data
    data: tuple[str, ...] = ("data/how_to_steps.jsonl",)  # files, dirs, tfds:, kaggle:
    validation_data: str = ""  # separate held-out file; else a split of data
    validation_fraction: float = 0.1  # share of examples held out
    template: str = "instruction"  # instruction | gemma | llama3 | "..{prompt}..{response}"
    completion_only_loss: bool = True  # loss on response/assistant tokens only
    drop_with_context: bool = False  # Dolly recipe: drop records with context
    keep_matching: str = ""  # FIELD=REGEX: keep records whose raw FIELD matches (re.search)
    num_examples: int = 0  # first N records of the data; 0 keeps all
    shuffle: bool = True  # shuffle records with `seed` before splitting
    sequence_length: int = 256  # tokens per training example
    packing: bool = False  # several examples per row, each attending only to itself
    show_examples: int = 0  # print N rendered training examples and exit
    data_weights: tuple[float, ...] = ()  # mixture weight per `data` spec; () chains them
    fields: str = ""  # field mapping, e.g. "prompt=headline,label=category"
    skip_bad_records: bool = False  # skip bad records (counted, reported), not fail
    tokenized_cache_dir: str = "~/.cache/keras_ft/tokens"  # token cache across runs; "" = off
    compile_cache_dir: str = "auto"  # JAX compile cache; auto: <cache>/jax_compile_cache; "" = off
    # optimization
    epochs: int = 1  # passes over the training split
    max_steps: int = 0  # stop after N optimizer steps; 0 runs all epochs
    batch_size: int = 1  # examples (packed rows) per batch: the global batch on a mesh
    learning_rate: float = 5e-5  # AdamW's peak learning rate
    weight_decay: float = 0.01  # AdamW; not on biases, norms, embeddings
    seed: int = 0  # shuffle, split, LoRA initialisation, dropout and sampling
    lr_schedule: str = "constant"  # constant | cosine | linear: decay to 0 after warmup
    warmup_steps: int = 0  # optimizer steps of linear warmup up to learning_rate
    gradient_accumulation_steps: int = 1  # batches averaged per optimizer step
    clip_norm: float = 0.0  # clip gradients to this global norm; 0 = off
    eval_every_steps: int = 0  # held-out loss/perplexity/accuracy every N steps; 0 = off
    early_stopping_patience: int = 0  # stop after N evaluations without a new best; 0 = off
    # generation
    sampler: str = "top_k"  # greedy | top_k | top_p | random (keras-hub samplers)
    top_k: int = 5  # top_k sampler: sample among the k likeliest tokens
    top_p: float = 0.9  # top_p sampler: the smallest set with this probability
    temperature: float = 1.0  # sampling temperature (not greedy)
    max_new_tokens: int = 64  # tokens generated per reply at most
    repetition_penalty: float = 1.0  # > 1 damps tokens already in prompt or reply (HF's); 1 = off
    no_repeat_ngram_size: int = 0  # no n-gram of this size twice in prompt + reply (HF's); 0 = off
    sample_prompts: tuple[str, ...] = DEFAULT_SAMPLE_PROMPTS  # prompts sampled before/after
    sample_every_steps: int = 0  # also generate for sample_prompts every N steps; 0 = off
    # output
    output_dir: str = "runs/latest"  # run directory; created if missing
    checkpoint_every_steps: int = 0  # checkpoint every N steps (always at the end); 0 = end only
    keep_checkpoints: int = 3  # newest checkpoints kept on disk
    resume: bool = True  # continue from the newest checkpoint in output_dir, if any
    overwrite: bool = False  # use a non-empty non-run output_dir; replaces only keras_ft's outputs
    # distribution (keras.distribution; see keras_ft.distribution.mesh)
    mesh: str = "auto"  # auto | DxM devices: 8x1 data-parallel, 1x8 or 2x4 model-parallel
    coordinator_address: str = ""  # multi-host: host:port of process 0; "" = auto/none
    num_processes: int = 0  # multi-host: number of processes; 0 = single process / auto
    process_id: int = 0  # multi-host: this process's index (0 = coordinator)

    def __post_init__(self):
        _check_types(self)
        _check_values(self)


POSITIVE_FIELDS = (
    "lora_rank",
    "epochs",
    "batch_size",
    "sequence_length",
    "max_new_tokens",
    "learning_rate",
    "top_k",
    "temperature",
    "repetition_penalty",
    "gradient_accumulation_steps",
    "keep_checkpoints",
    "data_weights",
)
# name -> (low, high, low included, high included)
INTERVAL_FIELDS = {
    "validation_fraction": (0, 1, True, False),
    "top_p": (0, 1, False, True),
    "seed": (0, 2**32 - 1, True, True),  # the seeds NumPy and keras accept
}


def _check_numbers(cfg: Config) -> None:
    """Checks every int/float (or list of them) field, found by its declared
    type: finite, then in its range. Fields in neither POSITIVE_FIELDS nor
    INTERVAL_FIELDS must be non-negative, so a new numeric field is covered."""
    hints = typing.get_type_hints(type(cfg))
    for field in dataclasses.fields(cfg):
        name, tp, value = field.name, hints[field.name], getattr(cfg, field.name)
        if typing.get_origin(tp) is tuple and typing.get_args(tp)[0] in (int, float):
            values, every = value, "all "
        elif tp in (int, float):
            values, every = (value,), ""
        else:
            continue
        received = f"Received: {name}={value!r}"
        if not all(math.isfinite(v) for v in values):
            what = "all be finite numbers" if every else "be a finite number"
            raise ValueError(f"`{name}` must {what}. {received}")
        if name in INTERVAL_FIELDS:
            low, high, low_in, high_in = INTERVAL_FIELDS[name]
            if not all(
                (low <= v if low_in else low < v) and (v <= high if high_in else v < high)
                for v in values
            ):
                span = f"{'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}"
                raise ValueError(f"`{name}` must {every}be in {span}. {received}")
        elif name in POSITIVE_FIELDS:
            if not all(v > 0 for v in values):
                raise ValueError(f"`{name}` must {every}be positive. {received}")
        elif not all(v >= 0 for v in values):
            raise ValueError(f"`{name}` must {every}be non-negative. {received}")


def _check_values(cfg: Config) -> None:
    _check_numbers(cfg)
    if cfg.early_stopping_patience and not cfg.eval_every_steps:
        raise ValueError(
            "`early_stopping_patience` needs periodic evaluation: set "
            "`eval_every_steps` > 0. Received: early_stopping_patience="
            f"{cfg.early_stopping_patience}, eval_every_steps=0"
        )
    _check_choice("sampler", cfg.sampler, SAMPLERS)
    if cfg.dtype in UNSCALED_DTYPES:
        raise ValueError(
            f"`dtype` {cfg.dtype} is not supported for training: float16 gradients "
            "underflow to zero (and large activations overflow) without loss "
            "scaling, which keras_ft does not apply. Use mixed_bfloat16 or "
            "bfloat16 (the same memory as float16, with float32's range), or "
            f"float32. Received: dtype={cfg.dtype!r}"
        )
    _check_choice("dtype", cfg.dtype, DTYPES)
    _check_choice("quantize", cfg.quantize, QUANTIZE_MODES)
    _check_choice("lr_schedule", cfg.lr_schedule, LR_SCHEDULES)
    _check_lora_targets(cfg.lora_targets)
    _check_distribution(cfg)
    if not cfg.data:
        raise ValueError("`data` must name at least one file. Received: data=()")
    if "{" not in cfg.template:
        _check_choice("template", cfg.template, tuple(TEMPLATES))


def _check_distribution(cfg: Config) -> None:
    """The mesh's form and the multi-host settings' consistency; whether the
    mesh matches the devices present is checked when it is made
    (`keras_ft.distribution.make_distribution`)."""
    if cfg.mesh != "auto" and not re.fullmatch(MESH_PATTERN, cfg.mesh):
        raise ValueError(
            "`mesh` must be 'auto' or DxM: devices along the data axis x along the model "
            "axis, each a positive whole number (e.g. 1x1 one device, 8x1 data-parallel, "
            f"1x8 or 2x4 model-parallel). Received: mesh={cfg.mesh!r}"
        )
    if cfg.process_id >= max(cfg.num_processes, 1):
        raise ValueError(
            f"`process_id` must be below `num_processes` (0 to {max(cfg.num_processes, 1) - 1}"
            f"; set `num_processes` for a multi-host run). Received: "
            f"process_id={cfg.process_id}, num_processes={cfg.num_processes}"
        )
    if cfg.coordinator_address and not re.fullmatch(
        r"(\[[0-9A-Fa-f:.]+\]|[^\s:,\[\]]+):[0-9]{1,5}", cfg.coordinator_address
    ):
        raise ValueError(
            "`coordinator_address` must be host:port of process 0 (e.g. 10.0.0.1:1234, "
            "localhost:12355 or [::1]:12355). Received: "
            f"coordinator_address={cfg.coordinator_address!r}"
        )


def _check_lora_targets(targets: str) -> None:
    """A target set name, or layer names (one, or comma-separated).

    Whether the layers exist is checked against the model once it is built
    (`model.lora_target_names`); here only the form is checked.
    """
    if targets in LORA_TARGET_SETS:
        return
    names = [n.strip() for n in targets.split(",")]
    if not any(names) or not all(re.fullmatch(r"[A-Za-z_][\w.]*", n) for n in names if n):
        raise ValueError(
            f"`lora_targets` must be one of {list(LORA_TARGET_SETS)} or layer names "
            f"separated by commas (e.g. query,value,token_embedding). "
            f"Received: lora_targets={targets!r}"
        )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"`{name}` must be one of {list(choices)}.{hint} Received: {name}={value!r}"
        )


def _check_types(cfg: Config) -> None:
    hints = typing.get_type_hints(type(cfg))
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        expected = hints[field.name]
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(cfg, field.name, float(value))
            continue
        if typing.get_origin(expected) is tuple and typing.get_args(expected)[0] is float:
            ok = isinstance(value, tuple) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
            )
            if ok:
                object.__setattr__(cfg, field.name, tuple(float(v) for v in value))
        elif typing.get_origin(expected) is tuple:
            ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
        elif expected is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, expected)
        if not ok:
            raise ValueError(
                f"`{field.name}` must be of type {_type_name(expected)}. "
                f"Received: {field.name}={value!r}"
            )


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is tuple:
        return f"list of {typing.get_args(tp)[0].__name__}"
    return tp.__name__


def field_docs() -> dict[str, str]:
    """Each field's trailing comment in the Config source, for `--help`."""
    docs = {}
    for line in inspect.getsource(Config).splitlines():
        match = re.match(r"\s+(\w+): [^=]+=.*?#\s*(.+)$", line)
        if match:
            docs[match.group(1)] = match.group(2).strip()
    return docs


def field_types() -> dict[str, Any]:
    """Returns the resolved type of every Config field, by name."""
    return typing.get_type_hints(Config)


def coerce_value(name: str, value: Any) -> Any:
    """Turns a YAML/CLI value into the field's type (lists become tuples)."""
    expected = field_types()[name]
    if typing.get_origin(expected) is tuple and typing.get_args(expected)[0] is float:
        items = value.split(",") if isinstance(value, str) else value
        if isinstance(items, (list, tuple)):
            try:  # "0.7,0.3" or ["0.7", "0.3"] from a flag; numbers from YAML
                return tuple(float(v) if isinstance(v, str) else v for v in items)
            except ValueError:
                raise ValueError(
                    f"`{name}` must be a list of numbers. Received: {name}={value!r}"
                ) from None
    if expected is float and isinstance(value, str):
        try:  # YAML 1.1 reads `5e-5` (no dot) as a string
            return float(value)
        except ValueError:
            return value  # the type check names the field
    if typing.get_origin(expected) is tuple:
        if isinstance(value, str):
            return (value,)
        if isinstance(value, (list, tuple)):
            return tuple(value)
    return value


def load_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Config:
    """Builds a Config from defaults, then a YAML file, then overrides.

    Args:
        path: optional experiment YAML file holding field overrides.
        overrides: field values that win over the file (e.g. CLI flags).

    Returns:
        The validated, frozen Config.

    Raises:
        ValueError: on an unknown key or an invalid value, naming it.
    """
    values: dict[str, Any] = {}
    if path:
        values.update(_read_yaml(Path(path)))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = field_types()
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            source = f" in {path}" if path else ""
            raise ValueError(f"Unknown config key{source}: {key!r}.{hint}")
    return Config(**{k: coerce_value(k, v) for k, v in values.items()})


def _read_yaml(path: Path) -> dict[str, Any]:
    if "\0" in str(path):  # open() raises a bare "embedded null byte"
        raise ValueError(
            f"Experiment file {str(path)!r} is not a valid path: it holds a NUL character."
        )
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"Experiment file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise ValueError(
            f"Experiment file {path} is not UTF-8 text (byte {e.start}: "
            f"{e.reason}); save it as UTF-8 YAML."
        ) from None
    except IsADirectoryError:
        raise ValueError(f"Experiment file {path} is a directory; pass a YAML file.") from None
    except OSError as e:
        raise ValueError(f"Experiment file {path} cannot be read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"Experiment file {path} is not valid YAML: {e}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(
            f"Experiment file {path} must be a mapping of config keys. "
            f"Received a {type(loaded).__name__}."
        )
    return loaded


def save_config(cfg: Config, path: str | Path) -> None:
    """Writes the resolved config as JSON (atomically)."""
    write_json(path, dataclasses.asdict(cfg))
