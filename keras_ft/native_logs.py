"""Native start-up noise: what TensorFlow's C++ libraries print that no user can act on.

`filtered_stderr` holds file descriptor 2 and passes on all but `STARTUP_NOISE`;
`QuietTensorFlowImport` (installed by `keras_ft/__init__.py`) imports
TensorFlow inside it and hides GPUs from TensorFlow on the JAX backend.
"""

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

# Start-up lines that TensorFlow's native libraries write to stderr while it is
# imported, whatever TF_CPP_MIN_LOG_LEVEL says (some carry their own absl
# logging), none of which a user can act on. Anything else written meanwhile is
# passed on. KERAS_FT_NATIVE_LOGS=1 shows everything.
STARTUP_NOISE = re.compile(
    "|".join(
        [
            r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
            r"oneDNN custom operations are on\.",  # a notice; TF_ENABLE_ONEDNN_OPTS is untouched
            r"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine",
            r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized",
            r"^To enable the following instructions: .* rebuild TensorFlow",
            # TensorFlow probing CUDA; keras_ft hides GPUs from it (JAX computes).
            r"cuda_platform\.cc:\d+\] failed call to cuInit",
            # SentencePiece (in tensorflow-text) loading a Gemma/Llama tokenizer.
            r"normalizer\.cc\(\d+\) LOG\(INFO\) precompiled_charsmap is empty",
        ]
    )
)


@contextlib.contextmanager
def filtered_stderr(noise: re.Pattern = STARTUP_NOISE):
    """Holds what is written to file descriptor 2 and passes on all but `noise`.

    Native libraries write to the descriptor, below `sys.stderr`, so it is
    pointed at a temporary file meanwhile; the kept lines follow at the end
    (also when the body raises).
    """
    if os.environ.get("KERAS_FT_NATIVE_LOGS"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not noise.search(line))
            if kept:
                os.write(2, kept.encode())


class QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Imports `tensorflow` inside `filtered_stderr`, then hides GPUs from it.

    keras-hub imports TensorFlow for its tokenizers; on the JAX backend it
    has no use for a GPU (JAX computes), and would otherwise probe CUDA.
    """

    def __init__(self):
        self._finding = False

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow" or self._finding:
            return None
        self._finding = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._finding = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec(module):
            with filtered_stderr():
                exec_module(module)
                if os.environ.get("KERAS_BACKEND") == "jax":
                    try:
                        module.config.set_visible_devices([], "GPU")
                    except (RuntimeError, ValueError):  # devices already set up
                        pass

        spec.loader.exec_module = quiet_exec
        return spec
