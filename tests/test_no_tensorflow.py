"""A training process without TensorFlow: keras_ft imports it only for what needs it."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_ft.data.records import DataError
from keras_ft.data.sources import parse_spec
from keras_ft.train.tensorboard_events import EventFileWriter

# Runs in a fresh interpreter: an import blocker (TensorFlow "not installed",
# every attempt recorded with who made it) goes in before keras_ft is imported.
TRAIN_WITHOUT_TENSORFLOW = textwrap.dedent(
    """
    import importlib.abc, json, sys, traceback

    attempts = []

    class NoTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in ("tensorflow", "tensorflow_text"):
                attempts.append("".join(traceback.format_stack(limit=12)))
                raise ImportError(f"{name} is blocked by the test")

    sys.meta_path.insert(0, NoTensorFlow())
    preset, data, out = sys.argv[1:]
    from keras_ft import Config, finetune

    result = finetune(Config(
        preset=preset, data=(data,), validation_fraction=0.0, max_steps=2, batch_size=2,
        output_dir=out, tokenized_cache_dir="", compile_cache_dir="",
        sample_prompts=("Hi",), max_new_tokens=2,
    ))
    print(json.dumps({
        "loss": result.history["loss"],
        "samples": [s["after"] for s in result.samples],
        "attempts": attempts,
        "tensorflow": sorted(m for m in sys.modules if m.partition(".")[0] == "tensorflow"),
    }))
    """
)


@pytest.mark.parametrize("preset", ["tiny_gemma", "tiny_gemma3"])  # Gemma 3: the main job's
def test_finetune_and_generation_run_without_tensorflow(preset, request, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": p, "completion": c}) + "\n"
            for p, c in [("Name a fox.", "The quick fox."), ("Count.", "1 2 3")] * 2
        )
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            TRAIN_WITHOUT_TENSORFLOW,
            str(request.getfixturevalue(preset)),
            str(data),
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if k != "KERAS_FT_IMPORT_TENSORFLOW"},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["attempts"] == [], "\n".join(report["attempts"])  # nobody asked for it
    assert report["tensorflow"] == []
    assert len(report["loss"]) == 1 and np.isfinite(report["loss"][0])
    assert len(report["samples"]) == 1  # generated after training
    # The run's own outputs, TensorBoard's event files among them.
    assert (tmp_path / "run/adapter.lora.h5").is_file()
    assert list((tmp_path / "run/tensorboard/train").glob("events.out.tfevents.*"))


def test_a_tfds_source_without_tensorflow_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # as if not installed
    source = parse_spec("tfds:imdb_reviews:train")
    with pytest.raises(DataError, match=r"tfds:imdb_reviews:train.*pip install tensorflow"):
        source.builder


def _events(path):
    import tensorflow as tf

    return [
        event
        for file in sorted(path.glob("events.out.tfevents.*"))
        for event in tf.compat.v1.train.summary_iterator(str(file))
    ]


def test_event_files_hold_what_tensorflows_writer_writes(tmp_path):
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    scalars = {"loss": 1.5, "learning_rate": 3e-4, "tokens_per_s": 1234.5}
    ours = EventFileWriter(tmp_path / "ours")
    ours.write(7, scalars)
    ours.write(8, {"loss": 1.25})
    ours.close()
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR,
    )
    writer = tf.summary.create_file_writer(str(tmp_path / "tf"))
    with writer.as_default():
        for step, values in ((7, scalars), (8, {"loss": 1.25})):
            for tag, value in values.items():
                tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=metadata)
    writer.flush()

    def comparable(events):
        kept = []
        for event in events:  # TensorFlow's reader checks every record's CRC
            event.wall_time = 0
            event.ClearField("source_metadata")
            kept.append(event.SerializeToString(deterministic=True))
        return kept

    ours_events = _events(tmp_path / "ours")
    assert ours_events[0].file_version == "brain.Event:2"
    assert comparable(ours_events) == comparable(_events(tmp_path / "tf"))
    assert [
        (e.step, v.tag, float(tf.make_ndarray(v.tensor)))
        for e in ours_events[1:]
        for v in e.summary.value
    ] == [
        (7, "loss", 1.5),
        (7, "learning_rate", np.float32(3e-4)),
        (7, "tokens_per_s", 1234.5),
        (8, "loss", 1.25),
    ]
