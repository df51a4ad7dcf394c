"""keras_ft.files: whole-or-nothing writes and file digests."""

import hashlib
import json
import os

import numpy as np
import pytest

from keras_ft import files


def test_atomic_path_replaces_the_file_only_when_the_block_completes(tmp_path):
    target = tmp_path / "adapter.lora.h5"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp.name.endswith(target.name)
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter.lora.h5"]  # no leftover
    with files.atomic_path(target, fsync=True) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # not visible before the block ends
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter.lora.h5"]


def test_write_json_holds_numpy_scalars_as_numbers_and_paths_as_text(tmp_path):
    path = tmp_path / "r.json"
    files.write_json(
        path,
        {"loss": np.float32(1.5), "steps": np.int64(3), "dir": tmp_path, "array": np.array(2.0)},
    )
    assert json.loads(path.read_text()) == {
        "loss": 1.5,
        "steps": 3,
        "dir": str(tmp_path),
        "array": 2.0,
    }


def test_to_plain_leaves_non_scalars_alone():
    assert files.to_plain(np.float64(0.25)) == 0.25 and type(files.to_plain(np.int32(2))) is int
    values = [1, 2]
    assert files.to_plain(values) is values
    assert files.to_plain(np.arange(3)).shape == (3,)


def test_sha256_file_reads_in_blocks(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)  # spans several 1 MiB blocks
    (tmp_path / "blob").write_bytes(data)
    assert files.sha256_file(tmp_path / "blob") == hashlib.sha256(data).hexdigest()


def test_replace_dir_swaps_a_whole_directory(tmp_path):
    out, new = tmp_path / "preset", tmp_path / "new"
    out.mkdir()
    (out / "stale.json").write_text("{}")
    new.mkdir()
    (new / "config.json").write_text("{}")
    files.replace_dir(new, out)
    assert [p.name for p in out.iterdir()] == ["config.json"] and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preset"]  # the old copy is gone
