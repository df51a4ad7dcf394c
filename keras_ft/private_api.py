"""Every private or undocumented keras / keras-hub (and kagglehub) API keras_ft uses.

keras_ft relies on names that their libraries do not promise to keep: names
starting with `_`, modules under `keras.src` / `keras_hub.src`, and a few
public-looking but undocumented methods. Each is listed once here, with where
keras_ft uses it and why. `check()` resolves them all against the installed
versions and fails naming every missing one, so an upgrade that removes one
fails tests/test_private_api.py with a clear message instead of a traceback
deep inside a training run. setup.cfg pins the versions they were checked on.

Adding a use of a private API? Add its entry here in the same change.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import tempfile
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import keras
import keras_hub
import numpy as np
from keras.src.backend.common import global_state
from keras.src.backend.jax.core import JaxVariable
from keras.src.utils.module_utils import LazyModule

from keras_ft.model.lora import read_lora_file
from keras_ft.testing import TINY_BACKBONE


@dataclasses.dataclass(frozen=True)
class PrivateAPI:
    """One private API keras_ft relies on.

    Attributes:
        name: dotted path, `package.module.Class.attribute`; the longest
            importable prefix is imported, the rest looked up with getattr.
        used_in: keras_ft's function(s) that use it.
        why: what it gives that no public API does.
        probe: for what `name` alone cannot show (an instance attribute, a
            global-state key): returns truthy when the API is there.
    """

    name: str
    used_in: str
    why: str
    probe: Callable[[], Any] | None = None


def _set_by(function: Callable, attribute: str) -> Callable[[], bool]:
    """A probe: `function`'s source still sets/reads the instance `attribute`."""
    return lambda: attribute in inspect.getsource(function)


def _lora_enabled_layers() -> bool:
    return _set_by(keras_hub.models.Backbone.enable_lora, "self._lora_enabled_layers")()


def _lora_file_layout() -> bool:
    """keras-hub's `save_lora_weights` still writes the H5 layout that
    `model.read_lora_file` reads (`lora/vars/rank`, `lora/<index>/vars/...`)."""
    backbone = keras_hub.models.GemmaBackbone(vocabulary_size=16, **TINY_BACKBONE)
    backbone.enable_lora(2)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.lora.h5"
        backbone.save_lora_weights(str(path))
        rank, layers = read_lora_file(path)
    return (
        rank == 2
        and len(layers) == 2 * TINY_BACKBONE["num_layers"]  # query and value
        and all(set(v) == {"lora_kernel_a", "lora_kernel_b"} for v in layers.values())
    )


def _optimizer_learning_rate() -> bool:
    return keras.optimizers.AdamW(learning_rate=0.25)._learning_rate == 0.25


def _deferred_variables_registry() -> bool:
    """A variable made in `StatelessScope(initialize_variables=False)` is
    deferred (`_value` None) and listed under "uninitialized_variables"."""
    key = "uninitialized_variables"
    before = list(global_state.get_global_attribute(key, []) or [])
    with keras.StatelessScope(initialize_variables=False):
        variable = keras.Variable(initializer=keras.initializers.Zeros(), shape=(1,))
    pending = global_state.get_global_attribute(key, []) or []
    found = any(v is variable for v in pending) and variable._value is None
    global_state.set_global_attribute(key, before)  # leave nothing pending
    return found


def _dense_kernels() -> bool:
    """Dense and EinsumDense keep their (unmerged, unquantized) kernel variable
    as `_kernel` (`kernel` adds the LoRA update)."""
    dense, einsum = keras.layers.Dense(2), keras.layers.EinsumDense("ab,bc->ac", (2,))
    dense.build((None, 3))
    einsum.build((None, 3))
    return all(
        isinstance(layer._kernel, keras.Variable) and layer._kernel.shape == (3, 2)
        for layer in (dense, einsum)
    )


def _variable_layout() -> bool:
    """A variable's `_layout` is where JAX places each value assigned to it:
    set on a deferred variable, the loader's assign lands sharded."""
    variable = keras.Variable(np.zeros((2,), np.float32))
    return hasattr(variable, "_layout") and "self._layout" in inspect.getsource(
        JaxVariable._direct_assign
    )


_PRESETS = "keras_hub.src.utils.preset_utils"
_HF_EXPORTER = "keras_hub.src.utils.transformers.export.hf_exporter"
_CAUSAL_LMS = ("GemmaCausalLM", "Gemma3CausalLM", "Llama3CausalLM")


def _asks_tensorflow_available(module_name: str) -> Callable[[], bool]:
    """A probe: `module_name` still asks Keras' lazy `tf.available`."""
    return lambda: "tf.available" in inspect.getsource(importlib.import_module(module_name))


def _lazy_tensorflow_caches_available() -> bool:
    """Keras' lazy module answers `available` from `_available` once set."""
    lazy = LazyModule("keras_ft_no_such_module")
    lazy._available = "set"
    return lazy.available == "set"


PRIVATE_APIS: tuple[PrivateAPI, ...] = (
    # ---- loading presets without random initialisation (model.py)
    PrivateAPI(
        f"{_PRESETS}.get_preset_loader",
        "model.causal_lm.load_backbone",
        "the loader keras-hub's from_preset uses, to load weights ourselves",
    ),
    PrivateAPI(
        f"{_PRESETS}.KerasPresetLoader",
        "model.causal_lm.load_backbone",
        "only keras-format presets (not hf:// conversions) take the lean path",
    ),
    PrivateAPI(
        f"{_PRESETS}.KerasPresetLoader._load_backbone_weights",
        "model.causal_lm.load_backbone",
        "assigns the stored weights into a backbone built without initialisers",
    ),
    PrivateAPI(
        f"{_PRESETS}.check_file_exists",
        "model.causal_lm._load_lean, preset_files.preset_context_length",
        "does a preset hold an optional file",
    ),
    PrivateAPI(
        f"{_PRESETS}.TASK_WEIGHTS_FILE",
        "model.causal_lm._load_lean",
        "presets with task weights take from_preset as is",
    ),
    PrivateAPI(
        f"{_PRESETS}.load_json",
        "preset_files.preset_context_length, distribution.memory.backbone_config",
        "reads config.json/metadata.json of any preset (local, kaggle://, hf://) "
        "before the weights load, to check sequence_length",
    ),
    PrivateAPI(
        f"{_PRESETS}.CONFIG_FILE",
        "preset_files.preset_context_length, distribution.memory.backbone_config",
        "the backbone config's file name",
    ),
    PrivateAPI(
        f"{_PRESETS}.METADATA_FILE",
        "preset_files.preset_context_length",
        "the preset metadata file, where keras_ft records context_length",
    ),
    PrivateAPI(
        "keras.src.backend.common.stateless_scope.in_stateless_scope",
        "model.causal_lm.load_backbone",
        "the lean load must not run inside a caller's scope",
    ),
    PrivateAPI(
        "keras.src.backend.common.global_state.get_global_attribute",
        "model.causal_lm._deferred_variables, distribution.memory._abstract_backbone",
        "finds the variables created deferred",
    ),
    PrivateAPI(
        "keras.src.backend.common.global_state.set_global_attribute",
        "model.causal_lm._deferred_variables, distribution.memory._abstract_backbone",
        "takes loaded variables off Keras' pending list, so that no later "
        "scope initialises them again",
    ),
    PrivateAPI(
        "global_state 'uninitialized_variables' + Variable._value",
        "model.causal_lm._deferred_variables, model.causal_lm.load_backbone",
        "the pending-variable list's key, and an unset variable's None value",
        _deferred_variables_registry,
    ),
    # ---- LoRA and quantization (model/lora.py, export/gguf.py, distribution/memory.py)
    PrivateAPI(
        "keras.layers.Layer._flatten_layers",
        "model.lora.quantize_backbone, model.lora.lora_target_names, "
        "model.lora._lora_layers (and through it model.lora.adapter_record, "
        "model.lora.check_lora_variables), export.gguf._check_not_quantized, "
        "distribution.memory._quantized_kernels, distribution.memory._ffw_width, "
        "export.merged.lora_layers (export.merged.merge_lora, export.peft.export_peft)",
        "every sublayer in keras-hub's own order (enable_lora indexes it)",
    ),
    PrivateAPI(
        "keras_hub.models.Backbone._lora_enabled_layers",
        "model.lora.enable_lora, model.lora._lora_layers (model.lora.adapter_record, "
        "model.lora.check_lora_variables)",
        "which layers keras-hub's enable_lora enabled, to set lora_alpha on them",
        _lora_enabled_layers,
    ),
    PrivateAPI(
        "keras_hub.models.Backbone.save_lora_weights",
        "model.lora.read_lora_file (model.lora.check_adapter, model.lora.check_lora_variables)",
        "the .lora.h5 layout it writes (undocumented), read with h5py to compare "
        "an adapter's shapes with a model before loading it",
        _lora_file_layout,
    ),
    PrivateAPI(
        "keras.layers.Dense._kernel + keras.layers.EinsumDense._kernel",
        "distribution.memory._quantized_kernels, distribution.memory._ffw_width",
        "the kernel variable itself (its path and shape), not `kernel`'s LoRA-merged value",
        _dense_kernels,
    ),
    PrivateAPI(
        "keras.Variable._layout",
        "model.causal_lm.load_backbone",
        "the layout a deferred variable is placed with when the loader assigns it "
        "(set from the distribution, as Keras' own _initialize_layout does), so "
        "weights land sharded without a random initialisation first",
        _variable_layout,
    ),
    # ---- the compiled generation loop (generation/decode.py)
    *(
        PrivateAPI(
            f"keras_hub.models.{cls}._build_cache",
            "generation.decode.GenerateLoop",
            "the prefill: runs the prompt and returns its KV cache",
        )
        for cls in _CAUSAL_LMS
    ),
    *(
        PrivateAPI(
            f"keras_hub.models.{cls}.call_with_cache",
            "generation.decode.GenerateLoop",
            "one cached decode step (public name, undocumented signature)",
        )
        for cls in _CAUSAL_LMS
    ),
    PrivateAPI(
        "keras_hub.samplers.Sampler.run_loop",
        "generation.decode.GenerateLoop",
        "the sampler's while-loop (undocumented)",
    ),
    PrivateAPI(
        "keras_hub.samplers.Sampler.compute_probabilities",
        "generation.decode.GenerateLoop",
        "logits -> probabilities with the sampler's temperature (undocumented)",
    ),
    PrivateAPI(
        "keras_hub.samplers.Sampler.get_next_token",
        "generation.decode.GenerateLoop",
        "the sampler's choice of the next token (undocumented)",
    ),
    PrivateAPI(
        "keras_hub.src.utils.tensor_utils.any_equal",
        "generation.decode.GenerateLoop",
        "stop-token test, as keras-hub's generate_step does it",
    ),
    # ---- packed training (model/packing.py)
    PrivateAPI(
        "keras_hub.src.models.gemma.gemma_decoder_block.GemmaDecoderBlock._compute_attention_mask",
        "model.packing.segment_attention",
        "narrowed to a block-diagonal mask for packed rows (Gemma)",
    ),
    PrivateAPI(
        "keras_hub.src.models.gemma3.gemma3_decoder_block.Gemma3DecoderBlock"
        "._compute_attention_mask",
        "model.packing.segment_attention",
        "narrowed to a block-diagonal mask for packed rows (Gemma 3)",
    ),
    PrivateAPI(
        "keras_hub.src.models.llama.llama_decoder.LlamaTransformerDecoder"
        "._compute_self_attention_mask",
        "model.packing.segment_attention",
        "narrowed to a block-diagonal mask for packed rows (Llama)",
    ),
    # ---- training (train/loop.py, train/callbacks.py, train/checkpoint.py)
    PrivateAPI(
        "keras.optimizers.Optimizer._learning_rate",
        "train.loop.learning_rate_logger",
        "the schedule object passed in (learning_rate gives only its value now)",
        _optimizer_learning_rate,
    ),
    PrivateAPI(
        "keras.Model.jax_state_sync",
        "train.loop._save_best, "
        "train.callbacks.PeriodicEval, train.callbacks.SampleText, "
        "train.checkpoint.Checkpoints.save",
        "fit keeps the newest weights in its "
        "JAX state; this writes them back (public name, undocumented)",
    ),
    # ---- exports (export/merged.py, export/hf.py, export/peft.py, export/upload.py)
    *(
        PrivateAPI(
            f"{_HF_EXPORTER}.{table}",
            "export.hf.supported_backbones, export.hf.check_supported",
            "what keras-hub's transformers exporter (the public "
            "CausalLM.export_to_transformers) supports, to refuse the rest by name",
        )
        for table in ("MODEL_CONFIGS", "MODEL_EXPORTERS", "MODEL_TOKENIZER_CONFIGS")
    ),
    PrivateAPI(
        "kagglehub.config.get_kaggle_credentials",
        "export.upload.kaggle_credentials",
        "kagglehub's own credential lookup (env vars, kaggle.json, access token), "
        "to fail before any network call when there are none",
    ),
    # ---- kagglehub's cache (hub.py)
    PrivateAPI(
        "kagglehub.cache.Cache.load_from_cache",
        "hub.cached_kaggle",
        "kagglehub's own completeness test (its .complete markers)",
    ),
    PrivateAPI(
        "kagglehub.cache.get_cached_path",
        "hub.cached_kaggle",
        "where kagglehub keeps a model or dataset version",
    ),
    PrivateAPI(
        "kagglehub.handle.parse_model_handle",
        "hub.cached_kaggle",
        "owner/model/framework/variation[/version] -> handle",
    ),
    PrivateAPI(
        "kagglehub.handle.parse_dataset_handle",
        "hub.cached_kaggle",
        "owner/dataset[/versions/N] -> handle",
    ),
    PrivateAPI(
        "kagglehub.config.get_cache_folder",
        "hub.kaggle_cache_folder",
        "the cache root, as kagglehub resolves $KAGGLEHUB_CACHE",
    ),
    PrivateAPI(
        "kagglesdk.kaggle_env.get_endpoint",
        "hub.kaggle_host",
        "the Kaggle host to probe (honours KAGGLE_API_ENDPOINT)",
    ),
    PrivateAPI(
        "kagglesdk.kaggle_env.get_env",
        "hub.kaggle_host",
        "the Kaggle environment the endpoint depends on",
    ),
    # ---- a training process without TensorFlow (keras_ft/__init__.py)
    PrivateAPI(
        "keras_hub.src.utils.preset_utils.tf_registered_schemes",
        "KerasHubWithoutTensorFlow.find_spec, TensorFlowSchemes",
        "keras-hub asks it (importing TensorFlow) for every preset file, local ones too",
        _set_by(
            importlib.import_module("keras_hub.src.utils.preset_utils").get_file,
            "scheme in tf_registered_schemes()",
        ),
    ),
    PrivateAPI(
        "keras_hub.src.models.gemma3.gemma3_causal_lm_preprocessor.assert_tf_installed",
        "KerasHubWithoutTensorFlow.find_spec (GEMMA3_PREPROCESSOR)",
        "Gemma 3's preprocessor asserts TensorFlow in __init__, not only in call",
        _set_by(
            importlib.import_module(
                "keras_hub.src.models.gemma3.gemma3_causal_lm_preprocessor"
            ).Gemma3CausalLMPreprocessor.__init__,
            "assert_tf_installed(",
        ),
    ),
    PrivateAPI(
        "keras.src.utils.module_utils.tensorflow",
        "KerasHubWithoutTensorFlow.find_spec, TensorFlowAvailable",
        "Keras' shared lazy TensorFlow; its `_available` answers `tf.available`",
        _lazy_tensorflow_caches_available,
    ),
    PrivateAPI(
        "keras.src.saving.serialization_lib.tf",
        "TensorFlowAvailable.ONLY_IF_IMPORTED",
        "asks tf.available only to test for TensorFlow objects (or to seed it)",
        _asks_tensorflow_available("keras.src.saving.serialization_lib"),
    ),
    PrivateAPI(
        "keras.src.legacy.saving.json_utils.tf",
        "TensorFlowAvailable.ONLY_IF_IMPORTED",
        "asks tf.available only to test for TensorFlow objects (or to seed it)",
        _asks_tensorflow_available("keras.src.legacy.saving.json_utils"),
    ),
    PrivateAPI(
        "keras.src.distribution.distribution_lib.tf",
        "TensorFlowAvailable.ONLY_IF_IMPORTED",
        "asks tf.available only to test for TensorFlow objects (or to seed it)",
        _asks_tensorflow_available("keras.src.distribution.distribution_lib"),
    ),
    PrivateAPI(
        "keras.src.utils.rng_utils.tf",
        "TensorFlowAvailable.ONLY_IF_IMPORTED",
        "asks tf.available only to test for TensorFlow objects (or to seed it)",
        _asks_tensorflow_available("keras.src.utils.rng_utils"),
    ),
)


def resolve(name: str) -> Any:
    """Imports the longest importable prefix of `name`, then getattr's the rest.

    Raises:
        ImportError / AttributeError: when a part is missing.
    """
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            if cut == 1:
                raise
            continue
        for attribute in parts[cut:]:
            value = getattr(value, attribute)
        return value
    raise ImportError(name)  # unreachable: the loop returns or raises


def versions() -> str:
    """The installed versions these APIs come from, for error messages."""
    found = []
    for package in ("keras", "keras-hub", "kagglehub", "kagglesdk"):
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            found.append(f"{package} (not installed)")
    return ", ".join(found)


def missing(apis: Sequence[PrivateAPI] = PRIVATE_APIS) -> list[str]:
    """One line per API that the installed libraries lack: name, where, why, error."""
    problems = []
    for api in apis:
        try:
            if api.probe is None:
                resolve(api.name)
                error = None
            else:
                error = None if api.probe() else "no longer there (its probe failed)"
        except Exception as e:  # any failure to find it is the answer
            error = f"{type(e).__name__}: {e}"
        if error:
            problems.append(f"{api.name} (used in {api.used_in}, for: {api.why}): {error}")
    return problems


def check(apis: Sequence[PrivateAPI] = PRIVATE_APIS) -> None:
    """Raises RuntimeError naming every listed private API that is missing.

    Raises:
        RuntimeError: naming each missing API, where keras_ft uses it, and the
            installed keras / keras-hub versions.
    """
    problems = missing(apis)
    if problems:
        raise RuntimeError(
            f"keras_ft relies on {len(problems)} private API(s) that the installed "
            f"libraries ({versions()}) lack; install the versions setup.cfg names, "
            "or port keras_ft (see keras_ft/private_api.py):\n  " + "\n  ".join(problems)
        )
