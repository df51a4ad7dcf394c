"""keras_ft refuses a Keras backend other than JAX, at import, with a message."""

import os
import subprocess
import sys

import pytest


def _import(code: str, backend: str | None):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    if backend is not None:
        env["KERAS_BACKEND"] = backend
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_another_backend_in_the_environment_is_refused(backend):
    result = _import("import keras_ft", backend)
    assert result.returncode == 1
    assert "keras_ft needs the JAX backend" in result.stderr
    assert f"Received: KERAS_BACKEND={backend!r}" in result.stderr


def test_keras_imported_first_under_another_backend_is_refused():
    # The environment says jax by the time keras_ft is imported, but keras
    # already chose numpy: its choice holds, so keras_ft must look at keras.
    code = "import os; import keras; os.environ['KERAS_BACKEND'] = 'jax'; import keras_ft"
    result = _import(code, "numpy")
    assert result.returncode == 1
    assert "but Keras uses 'numpy'" in result.stderr


def test_unset_backend_becomes_jax():
    result = _import("import keras_ft, keras; print(keras.config.backend())", None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "jax"
