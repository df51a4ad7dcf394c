"""keras_ft: LoRA fine-tuning of open LLMs with Keras 3 and keras-hub on JAX.

from keras_ft import Config, finetune
result = finetune(Config(preset="gemma_2b_en", data=("my_data.jsonl",)))
"""

import importlib.abc
import importlib.machinery
import os
import sys

# JAX unless the user chose another backend; must precede the first keras import.
os.environ.setdefault("KERAS_BACKEND", "jax")


def _require_jax_backend() -> None:
    """keras_ft is JAX code (the chunked loss, the decode loop, evaluation):
    refuse another Keras backend at import, not with a traceback mid-run."""
    chosen = os.environ["KERAS_BACKEND"]
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "config"):
        chosen = keras.config.backend()  # keras was imported first: its choice holds
    if chosen != "jax":
        raise ImportError(
            f"keras_ft needs the JAX backend of Keras, but Keras uses {chosen!r}. "
            "Set KERAS_BACKEND=jax (or unset it) before Keras is imported, e.g. "
            "restart the notebook kernel and import keras_ft first. "
            f"Received: KERAS_BACKEND={os.environ['KERAS_BACKEND']!r}"
        )


_require_jax_backend()
from keras_ft.native_logs import QuietTensorFlowImport  # noqa: E402

# TensorFlow (keras-hub's tokenizers, TensorBoard files) logs INFO lines a user
# cannot act on; warnings and errors still show. The user's value wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

if "tensorflow" not in sys.modules and not any(
    isinstance(f, QuietTensorFlowImport) for f in sys.meta_path
):
    sys.meta_path.insert(0, QuietTensorFlowImport())


class KerasHubWithoutTensorFlow(importlib.abc.MetaPathFinder):
    """Imports keras-hub with TensorFlow hidden.

    `import keras_hub` imports TensorFlow (~570 MB resident, seconds of
    start-up) only to see whether it is there: its modules try
    `import tensorflow` / `tensorflow_text` and take an ImportError for "not
    installed". keras-hub supports an install without them: its tokenizers
    and preprocessors run on Python (`sentencepiece`, `tokenizers`), which
    they do outside `tf.data` even when TensorFlow is present, and that is how
    keras_ft runs them. So while the `keras_hub` package is imported (it
    imports all of its modules then), both are hidden (None in `sys.modules`,
    which makes their import raise ImportError); afterwards they import as
    usual for the features that need them (`tfds:` sources, TensorBoard
    event files).

    Nothing is hidden when TensorFlow is imported already (keras-hub then
    uses it as it would), nor with KERAS_FT_IMPORT_TENSORFLOW=1 (for
    keras-hub's TensorFlow paths, e.g. its preprocessors inside `tf.data`).
    """

    MODULE = "keras_hub"
    PRESET_UTILS = "keras_hub.src.utils.preset_utils"  # see TensorFlowSchemes
    KERAS_MODULE_UTILS = "keras.src.utils.module_utils"  # see TensorFlowAvailable
    HIDDEN = ("tensorflow", "tensorflow_text")
    GEMMA3_PREPROCESSOR = "keras_hub.src.models.gemma3.gemma3_causal_lm_preprocessor"

    def find_spec(self, name, path=None, target=None):
        if name != self.MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_without_tensorflow(module):
            hidden = [m for m in self.HIDDEN if m not in sys.modules]
            for m in hidden:
                sys.modules[m] = None
            try:
                exec_module(module)
            finally:
                for m in hidden:
                    if m in sys.modules and sys.modules[m] is None:
                        del sys.modules[m]
            if "tensorflow" not in hidden:
                return
            preset_utils = sys.modules.get(self.PRESET_UTILS)
            if preset_utils is not None:
                schemes = preset_utils.tf_registered_schemes
                preset_utils.tf_registered_schemes = lambda: TensorFlowSchemes(schemes)
            module_utils = sys.modules.get(self.KERAS_MODULE_UTILS)
            if module_utils is not None and module_utils.tensorflow._available is None:
                module_utils.tensorflow._available = TensorFlowAvailable()
            # Gemma 3's preprocessor asserts TensorFlow when it is built, though
            # only its `call` (images, `tf.data`) uses it; keras_ft builds it
            # for its tokenizer and never calls it. Its check then passes: a call
            # without TensorFlow fails in TensorFlow code instead (use
            # KERAS_FT_IMPORT_TENSORFLOW=1 for keras-hub's own `generate`).
            gemma3 = sys.modules.get(self.GEMMA3_PREPROCESSOR)
            if gemma3 is not None:
                gemma3.assert_tf_installed = _built_without_tensorflow

        spec.loader.exec_module = exec_without_tensorflow
        return spec


def _built_without_tensorflow(symbol_name: str) -> None:
    """keras-hub's `assert_tf_installed` where a class asserts TensorFlow only to be built."""


class TensorFlowSchemes:
    """What keras-hub's `tf_registered_schemes()` returns with keras_ft.

    keras-hub's `get_file` asks `scheme in tf_registered_schemes()` for every
    preset file it opens, a local path (no scheme) too, and that function
    imports TensorFlow to answer. A path without a scheme never names a
    TensorFlow file system, so only a scheme (`gs://`...) is asked about,
    through keras-hub's own function (TensorFlow imported then).
    """

    def __init__(self, schemes):
        self._schemes = schemes

    def __contains__(self, scheme):
        return scheme is not None and scheme in self._schemes()


class TensorFlowAvailable:
    """What `tensorflow.available` is in Keras (its lazy `tensorflow` module) with keras_ft.

    Keras asks `tf.available` (which imports TensorFlow) where it only wants
    to know whether an object is a TensorFlow one: `if tf.available and
    isinstance(obj, tf.TensorShape)` when serializing any config, and to seed
    TensorFlow in `set_random_seed`. Asked from those places (`ONLY_IF_IMPORTED`),
    this answers whether TensorFlow is imported already: no object can be
    a TensorFlow one before, and TensorFlow is seeded when something uses it
    (`set_random_seed` after TensorFlow's import seeds it as before). Asked
    from anywhere else (e.g. the `StringLookup` layer, which needs
    TensorFlow), it imports TensorFlow, as Keras would.
    """

    ONLY_IF_IMPORTED = (
        "keras.src.saving.serialization_lib",
        "keras.src.legacy.saving.json_utils",
        "keras.src.distribution.distribution_lib",
        "keras.src.utils.rng_utils",
    )

    def __bool__(self):
        if sys.modules.get("tensorflow") is not None:
            return True
        if sys._getframe(1).f_globals.get("__name__") in self.ONLY_IF_IMPORTED:
            return False
        try:
            import tensorflow  # noqa: F401  # heavy: tensorflow (asked for by Keras)
        except ImportError:
            return False
        return True


if (
    os.environ.get("KERAS_FT_IMPORT_TENSORFLOW", "") in ("", "0")
    and KerasHubWithoutTensorFlow.MODULE not in sys.modules
    and not any(isinstance(f, KerasHubWithoutTensorFlow) for f in sys.meta_path)
):
    sys.meta_path.insert(0, KerasHubWithoutTensorFlow())

from keras_ft.config import Config, load_config  # noqa: E402

__all__ = ["Config", "load_config", "finetune", "Result"]


def __getattr__(name):
    # Lazy: `import keras_ft` (and `--help`) stays fast; keras loads on use.
    if name in ("finetune", "Result"):
        from keras_ft import pipeline  # heavy: keras, keras_hub, jax (pipeline loads them)

        return getattr(pipeline, name)
    raise AttributeError(f"module 'keras_ft' has no attribute {name!r}")
