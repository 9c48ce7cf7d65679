"""Where the model comes from: the Hugging Face Hub at a pinned revision, or the copy bundled in `models/`."""

import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import keras

from .labels import LABELS

log = logging.getLogger(__name__)

MODEL_FILENAME = "emotion_cnn.keras"
CONFIG_FILENAME = "config.json"
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "models"
# Where `train.py --push-to-hub` publishes the default model, and the tag it creates for this release.
DEFAULT_REPO_ID = "emotion-space/fer2013-emotion-cnn"
DEFAULT_REVISION = "v1"
REPO_ENV = "EMOTION_MODEL_REPO"  # set to "" or "bundled" to skip the Hub
REVISION_ENV = "EMOTION_MODEL_REVISION"


@dataclass(frozen=True)
class LoadedModel:
    model: keras.Model
    config: dict
    source: str  # "hub:<repo>@<revision>", "hub-cache:<repo>@<revision>", "bundled:<dir>" or "local:<path>"


def load_model_dir(folder: str | Path) -> tuple[keras.Model, dict]:
    """Load `folder/emotion_cnn.keras` (safe mode, no pickles) and its `config.json`, and check they agree."""
    folder = Path(folder)
    config = json.loads((folder / CONFIG_FILENAME).read_text())
    model = keras.saving.load_model(folder / MODEL_FILENAME, compile=False, safe_mode=True)
    labels = tuple(config.get("labels", ()))
    if labels != LABELS:
        raise ValueError(f"{folder}: model labels {labels} differ from {LABELS}")
    if model.output_shape[-1] != len(LABELS):
        raise ValueError(f"{folder}: model has {model.output_shape[-1]} outputs, expected {len(LABELS)}")
    return model, config


def _hub_reachable(timeout: float = 2.0) -> bool:
    """A quick TCP check, so that an offline start does not sit through huggingface_hub's retries."""
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _download(repo_id: str, revision: str, offline: bool) -> Path:
    from huggingface_hub import hf_hub_download

    paths = [
        hf_hub_download(repo_id, name, revision=revision, local_files_only=offline)
        for name in (CONFIG_FILENAME, MODEL_FILENAME)
    ]
    return Path(paths[1]).parent


def load(repo_id: str | None = None, revision: str | None = None, fallback: bool = True) -> LoadedModel:
    """Load the model: a local folder, else the Hub (cached), else the bundled `models/` copy.

    `repo_id` may also be a local model folder. Defaults come from $EMOTION_MODEL_REPO and $EMOTION_MODEL_REVISION.
    Any failure on the Hub path (offline, missing, corrupt or partial download) falls back to the bundled model,
    unless `fallback` is False: then the error is raised.
    """
    repo_id = os.environ.get(REPO_ENV, DEFAULT_REPO_ID) if repo_id is None else repo_id
    revision = revision or os.environ.get(REVISION_ENV) or DEFAULT_REVISION
    if repo_id and repo_id != "bundled":
        if Path(repo_id).is_dir():
            model, config = load_model_dir(repo_id)
            return LoadedModel(model, config, f"local:{repo_id}")
        from huggingface_hub import constants

        offline = constants.HF_HUB_OFFLINE or not _hub_reachable()
        try:
            model, config = load_model_dir(_download(repo_id, revision, offline))
            source = f"{'hub-cache' if offline else 'hub'}:{repo_id}@{revision}"
            log.info("Using model %s", source)
            return LoadedModel(model, config, source)
        except Exception as error:  # noqa: BLE001 - any Hub or load failure means: use the bundled model
            if not fallback:
                raise
            from huggingface_hub.errors import LocalEntryNotFoundError

            if isinstance(error, LocalEntryNotFoundError):
                reason = "the Hub is unreachable and nothing is cached"
            else:
                reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            log.warning("Could not load %s@%s from the Hub (%s); falling back to the bundled model.", repo_id, revision, reason)
    model, config = load_model_dir(BUNDLED_DIR)
    log.info("Using the bundled model in %s", BUNDLED_DIR)
    return LoadedModel(model, config, f"bundled:{BUNDLED_DIR}")


def push_to_hub(folder: str | Path, repo_id: str, token: str | None = None, tag: str | None = None) -> str:
    """Upload a model folder to the Hub (creating the repo if needed) and optionally tag the commit; return its URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token or os.environ.get("HF_TOKEN"))
    api.create_repo(repo_id, repo_type="model", exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        ignore_patterns=["checkpoints/*", ".*"],
        commit_message="Upload emotion model from train.py",
    )
    if tag:  # move the tag the app pins to this upload
        from huggingface_hub.errors import RevisionNotFoundError

        try:
            api.delete_tag(repo_id, tag=tag)
        except RevisionNotFoundError:
            pass
        api.create_tag(repo_id, tag=tag, revision=commit.oid)
    return commit.commit_url
