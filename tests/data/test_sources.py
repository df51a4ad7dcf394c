"""Data specs: tfds: built locally, kaggle: from a pre-populated cache, mixtures."""

import dataclasses
import json
import time
from pathlib import Path

import pytest

from keras_ft import hub
from keras_ft.config import Config
from keras_ft.data import sources
from keras_ft.data.records import DataError
from keras_ft.data.sources import KaggleSource, LocalSource, TfdsSource, interleave, parse_spec
from keras_ft.data.split import load_examples

NEWS = "rmisra/news-category-dataset"
NEWS_FILE = "News_Category_Dataset_v3.json"


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("data/x.jsonl", LocalSource("data/x.jsonl", Path("data/x.jsonl"))),
        ("tfds:imdb_reviews", TfdsSource("tfds:imdb_reviews", "imdb_reviews", "train")),
        (
            "tfds:glue/sst2:validation[:10%]",
            TfdsSource("tfds:glue/sst2:validation[:10%]", "glue/sst2", "validation[:10%]"),
        ),
        (f"kaggle:{NEWS}", KaggleSource(f"kaggle:{NEWS}", "rmisra", "news-category-dataset")),
        (
            f"kaggle:{NEWS}/versions/3/{NEWS_FILE}",
            KaggleSource(
                f"kaggle:{NEWS}/versions/3/{NEWS_FILE}",
                "rmisra",
                "news-category-dataset",
                3,
                NEWS_FILE,
            ),
        ),
    ],
)
def test_parse_spec(spec, expected):
    assert parse_spec(spec) == expected


@pytest.mark.parametrize("spec", ["tfds:", "tfds:bad name", "kaggle:owner", "kaggle:/x"])
def test_malformed_specs(spec):
    with pytest.raises(DataError, match="must look like") as info:
        parse_spec(spec)
    assert info.value.location == spec


# ------------------------------------------------------------------- tfds


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    import tensorflow_datasets as tfds

    data_dir = tmp_path_factory.mktemp("tfds")
    features = tfds.features.FeaturesDict(
        {
            "headline": tfds.features.Text(),
            "category": tfds.features.ClassLabel(names=["SPORTS", "POLITICS"]),
        }
    )
    rows = [{"headline": f"Headline {i}", "category": i % 2} for i in range(6)]
    tfds.dataset_builders.store_as_tfds_dataset(
        name="tiny_news",
        version="1.0.0",
        features=features,
        config="plain",
        split_datasets={"train": list(enumerate(rows)), "test": list(enumerate(rows[:2]))},
        data_dir=data_dir,
        disable_shuffling=True,
    )
    return data_dir


def test_tfds_dataset_built_locally_loads_with_a_field_mapping(tfds_dir, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tfds_dir))
    cfg = Config(
        data=("tfds:tiny_news/plain:train",),
        fields="prompt=headline,label=category",
        validation_fraction=0.0,
        shuffle=False,
    )
    train, validation, report = load_examples(cfg)
    assert [e.messages[0].content for e in train] == [f"Headline {i}" for i in range(6)]
    assert [e.label for e in train] == ["SPORTS", "POLITICS"] * 3  # names, not ids
    assert report.labels == {"SPORTS": 3, "POLITICS": 3} and validation == []
    assert train[0].source == "tfds:tiny_news/plain:train:1"
    test_split = load_examples(
        Config(data=("tfds:tiny_news/plain:test",), fields=cfg.fields, validation_fraction=0.0)
    )[0]
    assert len(test_split) == 2


def test_tfds_errors_are_data_errors(tfds_dir, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tfds_dir))
    with pytest.raises(DataError, match="has no split 'dev'"):
        list(parse_spec("tfds:tiny_news/plain:dev").records())
    with pytest.raises(DataError, match="names no TFDS dataset"):
        list(parse_spec("tfds:no_such_dataset_xyz").records())


# ----------------------------------------------------------------- kaggle


def _populate_cache(root: Path, version: int = 3) -> Path:
    """Lays out files as kagglehub's cache does after a complete download."""
    dataset = root / "datasets" / "rmisra" / "news-category-dataset"
    folder = dataset / "versions" / str(version)
    folder.mkdir(parents=True)
    (folder / NEWS_FILE).write_text(
        "\n".join(
            json.dumps(
                {
                    "headline": f"H{i}",
                    "category": "SPORTS" if i % 2 else "POLITICS",
                    "short_description": "",
                    "link": "l",
                }
            )
            for i in range(10)
        )
        + "\n"
    )
    (dataset / f"{version}.complete").touch()
    return folder


@pytest.fixture
def kaggle_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "kagglehub"


def test_kaggle_from_a_prepopulated_cache_offline(kaggle_cache, monkeypatch):
    folder = _populate_cache(kaggle_cache)
    _populate_cache(kaggle_cache, version=1)  # older versions are not chosen
    monkeypatch.setenv("KERAS_FT_OFFLINE", "1")
    import kagglehub

    # Our lookup agrees with kagglehub's own layout (a versioned handle is
    # served from the cache by kagglehub without the network).
    assert Path(kagglehub.dataset_download(f"{NEWS}/versions/3")) == folder
    assert sources.cached_kaggle_path(parse_spec(f"kaggle:{NEWS}")) == folder
    for spec in (
        f"kaggle:{NEWS}",
        f"kaggle:{NEWS}/{NEWS_FILE}",
        f"kaggle:{NEWS}/versions/3/{NEWS_FILE}",
    ):
        cfg = Config(
            data=(spec,),
            fields="prompt=headline+short_description,label=category",
            validation_fraction=0.2,
        )
        train, validation, report = load_examples(cfg)
        assert (len(train), len(validation)) == (8, 2)
        assert report.labels == {"SPORTS": 5, "POLITICS": 5}


def test_kaggle_offline_without_cache_fails_fast_and_says_what_to_do(kaggle_cache, monkeypatch):
    monkeypatch.setenv("KERAS_FT_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        load_examples(Config(data=(f"kaggle:{NEWS}",)))
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert message.startswith(f"kaggle:{NEWS}: ")
    for hint in ("KAGGLE_USERNAME", "local path", str(kaggle_cache), "KERAS_FT_OFFLINE"):
        assert hint in message


def test_kaggle_unreachable_uses_cache_or_fails_fast(kaggle_cache, monkeypatch):
    monkeypatch.delenv("KERAS_FT_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "unreachable", lambda host, timeout: "no route to host")
    with pytest.raises(DataError, match="unreachable \\(no route to host\\)"):
        sources.resolve_kaggle(parse_spec(f"kaggle:{NEWS}"))
    folder = _populate_cache(kaggle_cache)
    assert sources.resolve_kaggle(parse_spec(f"kaggle:{NEWS}")) == folder


def test_kaggle_download_errors_become_actionable(kaggle_cache, monkeypatch, tmp_path):
    import kagglehub
    import requests

    monkeypatch.delenv("KERAS_FT_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "unreachable", lambda host, timeout: None)

    def forbidden(handle, path=None):
        raise requests.HTTPError("403 Client Error: Forbidden")

    monkeypatch.setattr(kagglehub, "dataset_download", forbidden)
    with pytest.raises(DataError, match="403.*KAGGLE_USERNAME"):
        sources.resolve_kaggle(parse_spec(f"kaggle:{NEWS}"))
    downloaded = tmp_path / "downloaded"
    downloaded.mkdir()
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle, path=None: str(downloaded))
    assert sources.resolve_kaggle(parse_spec(f"kaggle:{NEWS}")) == downloaded


def test_unreachable_probe_is_bounded():
    start = time.monotonic()
    assert hub.unreachable("host.invalid", timeout=1.0) is not None
    assert time.monotonic() - start < 3


def test_kaggle_data_fails_fast_with_a_resolver_that_hangs(kaggle_cache, monkeypatch):
    # Name resolution ignores socket timeouts; the probe must not wait for it.
    import socket

    def slow_getaddrinfo(*args, **kwargs):
        time.sleep(10)
        raise socket.gaierror("slow resolver gave up")

    monkeypatch.delenv("KERAS_FT_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", slow_getaddrinfo)
    start = time.monotonic()
    with pytest.raises(DataError, match="Kaggle is unreachable .*KAGGLE_USERNAME"):
        sources.resolve_kaggle(parse_spec(f"kaggle:{NEWS}"))
    assert time.monotonic() - start < 5


def test_a_file_is_cached_by_its_own_marker_or_the_bundle_marker(kaggle_cache):
    dataset = kaggle_cache / "datasets" / "rmisra" / "news-category-dataset"
    folder = dataset / "versions" / "2"
    folder.mkdir(parents=True)
    (folder / NEWS_FILE).write_text("{}\n")
    source = parse_spec(f"kaggle:{NEWS}/{NEWS_FILE}")
    assert sources.cached_kaggle_path(source) is None  # no marker: a partial download
    marker = dataset / ".complete" / "2" / f"{NEWS_FILE}.complete"
    marker.parent.mkdir(parents=True)
    marker.touch()
    assert sources.cached_kaggle_path(source) == folder / NEWS_FILE
    assert sources.cached_kaggle_path(parse_spec(f"kaggle:{NEWS}")) is None  # not the bundle
    marker.unlink()
    (dataset / "2.complete").touch()
    assert sources.cached_kaggle_path(source) == folder / NEWS_FILE


# ---------------------------------------------------------------- mixtures


def _write(path: Path, name: str, count: int) -> str:
    path.write_text(
        "".join(
            json.dumps({"prompt": f"{name} {i}", "completion": name}) + "\n" for i in range(count)
        )
    )
    return str(path)


def test_weighted_mixture_of_two_files_has_the_expected_proportions(tmp_path):
    a = _write(tmp_path / "a.jsonl", "A", 2000)
    b = _write(tmp_path / "b.jsonl", "B", 2000)
    cfg = Config(
        data=(a, b), data_weights=(3.0, 1.0), num_examples=1200, validation_fraction=0.0, seed=7
    )
    train, _, report = load_examples(cfg)
    share = sum(e.messages[1].content == "A" for e in train) / len(train)
    assert len(train) == 1200 and abs(share - 0.75) < 0.05  # 4 binomial sd
    assert report.sources[a] + report.sources[b] == 1200
    again, _, _ = load_examples(cfg)
    assert [e.source for e in again] == [e.source for e in train]  # from the seed
    other, _, _ = load_examples(dataclasses.replace(cfg, seed=8))
    assert [e.source for e in other] != [e.source for e in train]


def test_mixture_stops_when_a_source_runs_out_and_says_so(tmp_path):
    a = _write(tmp_path / "a.jsonl", "A", 50)
    b = _write(tmp_path / "b.jsonl", "B", 1000)
    cfg = Config(data=(a, b), data_weights=(1.0, 1.0), validation_fraction=0.0)
    train, _, report = load_examples(cfg)
    assert report.sources[a] == 50 and 20 < report.sources[b] < 120
    assert any("ran out" in note for note in report.notes)


def test_interleave_is_deterministic_and_weighted():
    def run(seed):
        streams = [iter(range(10_000)), iter(range(10_000))]
        return [i for i, _ in interleave(streams, [0.2, 0.8], seed)][:5000]

    assert run(1) == run(1) != run(2)
    assert abs(run(1).count(0) / 5000 - 0.2) < 0.03


@pytest.mark.parametrize("weights, match", [((1.0,), "one weight per"), ((1.0, 0.0), "positive")])
def test_bad_weights_name_the_field(tmp_path, weights, match):
    a = _write(tmp_path / "a.jsonl", "A", 5)
    with pytest.raises(ValueError, match=match) as info:
        load_examples(Config(data=(a, a), data_weights=weights))
    assert "data_weights" in str(info.value)
