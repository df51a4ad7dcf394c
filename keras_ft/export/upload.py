"""Uploads of an export directory: Kaggle Models (kagglehub) and the Hugging Face Hub.

Each upload is an explicit command (`keras-ft upload kaggle|hf`), never a
side effect of an export. Both check, in this order and before any upload
starts: the directory, the credentials (no network needed: an absent token
fails at once, naming the variables and files that provide one), and that
the host answers within `hub.PROBE_TIMEOUT` seconds (`hub.unreachable`, a
bounded probe; `KERAS_FT_OFFLINE=1` refuses at once). Only then does the
library's own upload run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from keras_ft import hub

logger = logging.getLogger(__name__)

HF_HOST = "huggingface.co"

KAGGLE_CREDENTIALS_HELP = (
    "Set KAGGLE_API_TOKEN (an API token from kaggle.com > Settings > API), or "
    "KAGGLE_USERNAME and KAGGLE_KEY, or put kaggle.json in ~/.kaggle/ "
    "(or $KAGGLE_CONFIG_DIR)."
)
HF_CREDENTIALS_HELP = (
    "Set HF_TOKEN (a write token from huggingface.co/settings/tokens), or run "
    "`hf auth login` (it stores the token in ~/.cache/huggingface/token), or pass --token."
)


def _check_dir(directory: str | os.PathLike) -> Path:
    directory = Path(directory)
    if not directory.is_dir() or not any(directory.iterdir()):
        raise ValueError(
            f"{directory} is not a directory with files to upload; pass the directory an "
            "export wrote (`keras-ft export preset|hf|peft ... OUT_DIR`)."
        )
    return directory


def _check_reachable(host: str, what: str) -> None:
    if hub.offline():
        raise ValueError(
            f"{hub.OFFLINE_ENV} is set: no network access, so nothing can be uploaded to "
            f"{what}. Unset it on a machine that reaches {host}."
        )
    why = hub.unreachable(host)
    if why is not None:
        raise ValueError(
            f"Cannot reach {host} ({why}): the network is unreachable from here, so "
            f"nothing was uploaded to {what}. Upload from a machine with internet access."
        )


def kaggle_credentials():
    """kagglehub's credentials (its own lookup), or None; reads no network."""
    from kagglehub.config import get_kaggle_credentials  # heavy: kagglehub

    return get_kaggle_credentials()


def upload_kaggle(
    directory: str | os.PathLike,
    handle: str,
    license_name: str | None = None,
    version_notes: str = "",
) -> str:
    """Uploads `directory` as a Kaggle model variation through `kagglehub.model_upload`.

    Args:
        handle: `owner/model/framework/variation`, e.g. `me/gemma-steps/keras/2b`.
        license_name: The license of a new model (kagglehub's names, e.g.
            "Apache 2.0"); None: kagglehub's default.

    Returns:
        The handle uploaded to.

    Raises:
        ValueError: not a directory, a bad handle, no credentials, offline.
    """
    directory = _check_dir(directory)
    parts = handle.split("/")
    if len(parts) != 4 or not all(parts):
        raise ValueError(
            "--handle must be owner/model/framework/variation, e.g. me/my-model/keras/2b. "
            f"Received: {handle!r}"
        )
    if kaggle_credentials() is None:
        raise ValueError(f"No Kaggle credentials found. {KAGGLE_CREDENTIALS_HELP}")
    _check_reachable(hub.kaggle_host(), "Kaggle")
    import kagglehub  # heavy: kagglehub

    kagglehub.model_upload(
        handle, str(directory), license_name=license_name, version_notes=version_notes
    )
    logger.info("Uploaded %s to Kaggle as %s", directory, handle)
    return handle


def hf_token(token: str | None = None) -> str | None:
    """`token`, else huggingface_hub's own (HF_TOKEN, the stored login); no network."""
    if token:
        return token
    from huggingface_hub import get_token  # heavy: huggingface_hub

    return get_token()


def upload_hf(
    directory: str | os.PathLike,
    repo: str,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload from keras_ft",
) -> str:
    """Uploads `directory` to the Hugging Face model repo `repo` (created if
    missing) through `huggingface_hub.HfApi.upload_folder`.

    Returns:
        The repo's URL.

    Raises:
        ValueError: not a directory, a bad repo id, no token, offline.
    """
    directory = _check_dir(directory)
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ValueError(f"--repo must be owner/name, e.g. me/gemma-steps. Received: {repo!r}")
    token = hf_token(token)
    if not token:
        raise ValueError(f"No Hugging Face token found. {HF_CREDENTIALS_HELP}")
    _check_reachable(HF_HOST, "the Hugging Face Hub")
    from huggingface_hub import HfApi  # heavy: huggingface_hub

    api = HfApi(token=token)
    api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo,
        folder_path=str(directory),
        repo_type="model",
        commit_message=commit_message,
    )
    logger.info("Uploaded %s to %s", directory, repo)
    return str(getattr(info, "repo_url", f"https://{HF_HOST}/{repo}"))
