"""`keras-ft upload kaggle|hf` fail fast offline or without credentials, saying
what to do. Each runs in a subprocess bounded at 60 s (a hang fails the test)."""

import os
import subprocess
import sys

import pytest

from keras_ft.export.upload import upload_hf, upload_kaggle

# Nothing of this machine's own credentials may leak in: HOME, the Kaggle and
# Hugging Face config dirs are the test's.
SCRUBBED = ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "HF_TOKEN", "KERAS_FT_OFFLINE")


def upload(tmp_path, *args, **env) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    environ = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    environ.update(HOME=str(home), KAGGLE_CONFIG_DIR=str(home), HF_HOME=str(home / "hf"), **env)
    return subprocess.run(
        [sys.executable, "-m", "keras_ft.cli.upload", *args],
        capture_output=True, text=True, timeout=60, env=environ, cwd=tmp_path,
    )  # fmt: skip


@pytest.fixture
def export_dir(tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "README.md").write_text("# a model\n")
    return out


def test_kaggle_without_credentials_names_them(export_dir, tmp_path):
    result = upload(tmp_path, "kaggle", str(export_dir), "--handle", "me/m/keras/v")
    assert result.returncode == 1
    assert "No Kaggle credentials found. Set KAGGLE_API_TOKEN" in result.stderr
    assert "KAGGLE_USERNAME and KAGGLE_KEY" in result.stderr


def test_kaggle_offline_says_the_network_is_unreachable(export_dir, tmp_path):
    result = upload(
        tmp_path, "kaggle", str(export_dir), "--handle", "me/m/keras/v",
        KAGGLE_USERNAME="me", KAGGLE_KEY="0123",
    )  # fmt: skip
    assert result.returncode == 1
    assert "Cannot reach" in result.stderr and "the network is unreachable" in result.stderr


def test_hf_without_a_token_names_how_to_get_one(export_dir, tmp_path):
    result = upload(tmp_path, "hf", str(export_dir), "--repo", "me/m")
    assert result.returncode == 1
    assert "No Hugging Face token found. Set HF_TOKEN" in result.stderr


def test_hf_offline_says_the_network_is_unreachable(export_dir, tmp_path):
    result = upload(tmp_path, "hf", str(export_dir), "--repo", "me/m", HF_TOKEN="hf_x")
    assert result.returncode == 1
    assert "Cannot reach huggingface.co" in result.stderr
    assert "the network is unreachable" in result.stderr


def test_keras_ft_offline_refuses_at_once(export_dir, tmp_path):
    result = upload(
        tmp_path, "hf", str(export_dir), "--repo", "me/m", HF_TOKEN="hf_x", KERAS_FT_OFFLINE="1"
    )
    assert result.returncode == 1 and "KERAS_FT_OFFLINE is set" in result.stderr


def test_bad_handles_and_empty_dirs_are_usage_mistakes(tmp_path, export_dir):
    with pytest.raises(ValueError, match="--handle must be owner/model/framework/variation"):
        upload_kaggle(export_dir, "me/model")
    with pytest.raises(ValueError, match="--repo must be owner/name"):
        upload_hf(export_dir, "model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is not a directory with files to upload"):
        upload_hf(tmp_path / "empty", "me/m")
