"""Data specs -> record streams: local files, `tfds:`, `kaggle:`, mixtures.

A spec is a string, as in `--data`:
  * a local file or directory (JSON, JSONL, CSV, Parquet; see `readers`);
  * `tfds:NAME[/CONFIG][:SPLIT]`, read through tensorflow-datasets from
    `$TFDS_DATA_DIR` (prepared there if needed; SPLIT defaults to `train`);
  * `kaggle:OWNER/DATASET[/versions/N][/FILE]`, downloaded by kagglehub into
    its cache (`$KAGGLEHUB_CACHE`, default ~/.cache/kagglehub). A cached copy
    is used without the network when `KERAS_FT_OFFLINE=1` or Kaggle cannot be
    reached; without one, an offline run fails in seconds saying what to do.
Several specs with weights are mixed by `interleave`, deterministically from
the seed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence, TypeVar

import numpy as np

from keras_ft import hub
from keras_ft.data.readers import list_data_files, read_file
from keras_ft.data.records import DataError, FieldMapping
from keras_ft.files import update_digest
from keras_ft.hub import OFFLINE_ENV

log = logging.getLogger(__name__)
T = TypeVar("T")


class Source(Protocol):
    spec: str

    def records(self, mapping: FieldMapping | None = None) -> Iterator[tuple[str, Any]]:
        """Yields (location, raw record or DataError) pairs."""

    def fingerprint(self) -> str:
        """A hash that changes when the data changes (for token caches)."""


def parse_spec(spec: str) -> Source:
    """Returns the source that a `--data` string names (nothing is read yet).

    Raises:
        DataError: for a malformed `tfds:`/`kaggle:` spec, or another URI scheme.
    """
    if spec.startswith("tfds:"):
        name, _, split = spec[len("tfds:") :].partition(":")
        if not re.fullmatch(r"[\w.-]+(/[\w.=,-]+)?", name):
            raise DataError(
                "must look like tfds:NAME[/CONFIG][:SPLIT], e.g. tfds:imdb_reviews:train.",
                location=spec,
                reason="bad_spec",
            )
        return TfdsSource(spec, name, split or "train")
    if spec.startswith("kaggle:"):
        parts = spec[len("kaggle:") :].lstrip("/").split("/")
        if len(parts) < 2 or not all(parts[:2]):
            raise DataError(
                "must look like kaggle:OWNER/DATASET[/versions/N][/FILE], "
                "e.g. kaggle:rmisra/news-category-dataset.",
                location=spec,
                reason="bad_spec",
            )
        version = None
        if len(parts) >= 4 and parts[2] == "versions" and parts[3].isdigit():
            version, parts = int(parts[3]), parts[:2] + parts[4:]
        return KaggleSource(spec, parts[0], parts[1], version, "/".join(parts[2:]))
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", spec)
    if scheme:  # pathlib would read s3://bucket/x as the local path s3:/bucket/x
        raise DataError(
            f"unsupported scheme {scheme.group(1)}://; supported: local "
            "paths (a file or a directory), tfds:NAME[/CONFIG][:SPLIT], "
            "kaggle:OWNER/DATASET (also kaggle://OWNER/DATASET).",
            location=spec,
            reason="bad_spec",
        )
    return LocalSource(spec, Path(spec).expanduser())


@dataclasses.dataclass(frozen=True)
class LocalSource:
    """A data file, or a directory of them (read in sorted order)."""

    spec: str
    path: Path

    def records(self, mapping: FieldMapping | None = None) -> Iterator[tuple[str, Any]]:
        for file in list_data_files(self.path):
            yield from read_file(file, mapping)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for file in list_data_files(self.path):
            digest.update(
                str(file.relative_to(self.path) if file != self.path else file.name).encode()
                + b"\0"
            )
            update_digest(digest, file)
        return digest.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    """A split of a TensorFlow Datasets dataset; ClassLabels become names."""

    spec: str
    name: str  # NAME or NAME/CONFIG
    split: str

    @functools.cached_property
    def builder(self):
        # tfds 4.9 builders need importlib_resources but do not declare it.
        missing = [
            m
            for m in ("tensorflow_datasets", "importlib_resources")
            if importlib.util.find_spec(m) is None
        ]
        if missing:
            raise DataError(
                f"needs {' and '.join(missing)}: pip install "
                f"{' '.join(m.replace('_', '-') for m in missing)}.",
                location=self.spec,
                reason="bad_spec",
            )
        try:  # tfds reads through TensorFlow, imported only for it
            import tensorflow  # noqa: F401  # heavy: tensorflow
        except ImportError:
            raise DataError(
                "needs TensorFlow, which TensorFlow Datasets reads through: "
                "pip install tensorflow.",
                location=self.spec,
                reason="bad_spec",
            ) from None
        import tensorflow_datasets as tfds  # heavy: tensorflow_datasets

        try:
            builder = tfds.builder(self.name, data_dir=os.environ.get("TFDS_DATA_DIR"))
        except tfds.core.registered.DatasetNotFoundError as e:
            raise DataError(
                f"names no TFDS dataset: {str(e).splitlines()[0]} Check the "
                "name at https://www.tensorflow.org/datasets/catalog, or set "
                "TFDS_DATA_DIR to where it was prepared.",
                location=self.spec,
                reason="bad_spec",
            ) from None
        if not builder.is_prepared():
            log.info("Preparing %s in %s (downloads once).", self.name, builder.data_dir)
            try:
                builder.download_and_prepare()
            except Exception as e:  # tfds surfaces network/source errors of any type
                raise DataError(
                    f"could not be downloaded and prepared ({type(e).__name__}: {e}). "
                    f"Offline, prepare it elsewhere (`tfds build {self.name}`) and copy "
                    "the data directory here, pointing TFDS_DATA_DIR at it.",
                    location=self.spec,
                    reason="download_failed",
                ) from None
        return builder

    def records(self, mapping: FieldMapping | None = None) -> Iterator[tuple[str, Any]]:
        import tensorflow_datasets as tfds  # heavy: tensorflow_datasets

        builder = self.builder
        names = {
            key: feature.names
            for key, feature in builder.info.features.items()
            if isinstance(feature, tfds.features.ClassLabel)
        }
        try:
            dataset = builder.as_dataset(split=self.split, shuffle_files=False)
        except ValueError as e:
            raise DataError(
                f"has no split {self.split!r} ({e}). Splits: {sorted(builder.info.splits)}.",
                location=self.spec,
                reason="bad_spec",
            ) from None
        for number, example in enumerate(tfds.as_numpy(dataset), 1):
            yield f"{self.spec}:{number}", _to_python(example, names)

    def fingerprint(self) -> str:
        builder = self.builder
        key = f"{builder.info.full_name}|{self.split}|{builder.data_dir}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]


def _to_python(value: Any, class_names: dict | None = None) -> Any:
    """numpy/bytes values from TFDS -> plain Python (bytes as UTF-8 text)."""
    if isinstance(value, dict):
        return {
            k: (class_names[k][int(v)] if class_names and k in class_names else _to_python(v))
            for k, v in value.items()
        }
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, np.ndarray):
        return [_to_python(v) for v in value.tolist()] if value.ndim else _to_python(value.item())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_to_python(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class KaggleSource:
    """A Kaggle dataset (or one file of it), resolved through kagglehub's cache."""

    spec: str
    owner: str
    dataset: str
    version: int | None = None
    file: str = ""

    @functools.cached_property
    def local(self) -> LocalSource:
        return LocalSource(self.spec, resolve_kaggle(self))

    def records(self, mapping: FieldMapping | None = None) -> Iterator[tuple[str, Any]]:
        return self.local.records(mapping)

    def fingerprint(self) -> str:
        return self.local.fingerprint()


def resolve_kaggle(source: KaggleSource, timeout: float = hub.PROBE_TIMEOUT) -> Path:
    """Local path of a Kaggle dataset: from kagglehub's cache or downloaded.

    Offline (`KERAS_FT_OFFLINE=1`, or Kaggle unreachable within `timeout`
    seconds) the newest complete cached version is used. kagglehub itself
    would ask the server for the current version first, even when cached.

    Raises:
        DataError: within seconds when it is neither cached nor downloadable,
            saying how to fix it (network, credentials, cache, local file).
    """
    cached = cached_kaggle_path(source)
    offline = hub.offline()
    unreachable = None if offline else hub.unreachable(hub.kaggle_host(), timeout)
    if cached and (offline or unreachable or source.version is not None):
        log.info(
            "Using %s from the kagglehub cache (%s), without the network.", source.spec, cached
        )
        return cached
    if offline or unreachable:
        why = f"{OFFLINE_ENV} is set" if offline else f"Kaggle is unreachable ({unreachable})"
        raise _kaggle_error(source, f"it is not in the kagglehub cache and {why}.")
    import kagglehub  # heavy: kagglehub
    from kagglehub import exceptions  # heavy: kagglehub

    handle = f"{source.owner}/{source.dataset}"
    if source.version is not None:
        handle += f"/versions/{source.version}"
    try:
        return Path(kagglehub.dataset_download(handle, path=source.file or None))
    except (
        OSError,
        ValueError,
        exceptions.CredentialError,
        exceptions.BackendError,
        exceptions.NotFoundError,
        exceptions.UnauthenticatedError,
        exceptions.DataCorruptionError,
    ) as e:
        if cached:
            log.warning("kagglehub failed (%s); using the cached copy %s.", e, cached)
            return cached
        raise _kaggle_error(source, f"kagglehub failed: {type(e).__name__}: {e}") from None


def cached_kaggle_path(source: KaggleSource) -> Path | None:
    """The newest complete copy in kagglehub's cache (see `hub.cached_kaggle`)."""
    handle = f"{source.owner}/{source.dataset}"
    if source.version is not None:
        handle += f"/versions/{source.version}"
    cached = hub.cached_kaggle("dataset", handle, (source.file,) if source.file else ())
    return cached / source.file if cached and source.file else cached


def _kaggle_error(source: KaggleSource, why: str) -> DataError:
    return DataError(
        f"cannot be loaded: {why} Do one of: connect to the internet; for private "
        "or consent-gated datasets set KAGGLE_USERNAME and KAGGLE_KEY (or "
        "~/.kaggle/kaggle.json) and accept the dataset's rules on kaggle.com; "
        "download the file elsewhere and pass its local path to --data; or copy "
        f"a kagglehub cache into {hub.kaggle_cache_folder()} (set KAGGLEHUB_CACHE to "
        f"move it) and set {OFFLINE_ENV}=1.",
        location=source.spec,
        reason="download_failed",
    )


def interleave(
    streams: Sequence[Iterator[T]], weights: Sequence[float], seed: int
) -> Iterator[tuple[int, T]]:
    """Mixes streams: each item comes from stream i with probability w_i.

    Deterministic given `seed`. Stops when the chosen stream runs out, so
    the mixture keeps its proportions (as `interleave_datasets`'s
    "first_exhausted" does) instead of ending with one source only.

    Yields:
        (stream index, item) pairs.
    """
    weights = np.asarray(weights, np.float64)
    cumulative = np.cumsum(weights / weights.sum())
    rng = np.random.default_rng(seed)
    while True:
        index = min(int(np.searchsorted(cumulative, rng.random(), side="right")), len(streams) - 1)
        try:
            item = next(streams[index])
        except StopIteration:
            return
        yield index, item
