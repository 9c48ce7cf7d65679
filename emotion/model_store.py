"""Where the model comes from: the Hugging Face Hub at a pinned revision, or the copy bundled in `models/`.

A model folder holds `emotion_cnn.keras` (training, evaluation), `emotion_cnn.onnx` (the same network for ONNX
Runtime), `emotion_cnn.int8.onnx` (that graph quantized to INT8, what the app serves: 4-6x faster) and `config.json`.
Serving takes the first of these the folder has: the INT8 graph, the float graph, else the .keras file through
TensorFlow (a model that did not convert); from the Hub it downloads only that file and the config.
"""

import json
import logging
import os
import socket
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import onnxruntime as ort

from .classifier import Classifier, onnx_session
from .labels import LABELS
from .preprocess import INPUT_SIZE

log = logging.getLogger(__name__)

MODEL_FILENAME = "emotion_cnn.keras"
ONNX_FILENAME = "emotion_cnn.onnx"
INT8_FILENAME = "emotion_cnn.int8.onnx"
SERVED_FILENAMES = (INT8_FILENAME, ONNX_FILENAME, MODEL_FILENAME)  # serving's order of preference
CONFIG_FILENAME = "config.json"
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "models"
# Where `train.py --push-to-hub` publishes the default model, and the tag it creates for this release.
DEFAULT_REPO_ID = "emotion-space/fer2013-emotion-cnn"
DEFAULT_REVISION = "v1"
REPO_ENV = "EMOTION_MODEL_REPO"  # set to "" or "bundled" to skip the Hub
REVISION_ENV = "EMOTION_MODEL_REVISION"


@dataclass(frozen=True)
class LoadedModel:
    """A model folder as loaded for serving: its config, its ONNX Runtime session (None when the folder has no .onnx
    file), where it came from and which file runs."""

    folder: Path
    config: dict
    source: str  # "hub:<repo>@<revision>", "hub-cache:<repo>@<revision>", "bundled:<dir>" or "local:<path>"
    session: ort.InferenceSession | None = field(repr=False)
    served: str = ONNX_FILENAME  # the file that runs: one of SERVED_FILENAMES
    hub: tuple[str, str, bool] | None = field(default=None, repr=False)  # repo, revision, offline: to fetch .keras

    def classifier(self) -> Classifier:
        """The classifier the config describes, on ONNX Runtime (a folder without .onnx file: its Keras model,
        converted in memory by `emotion.onnx_graph`, or run by TensorFlow when it does not convert)."""
        return Classifier.from_config(self.session or self.model, self.config)

    @cached_property
    def model(self) -> Any:
        """The Keras model (for training and evaluation; imports TensorFlow, and downloads the .keras file from the
        Hub when the model came from there)."""
        folder = self.folder
        if self.hub and not (folder / MODEL_FILENAME).is_file():
            from huggingface_hub import hf_hub_download

            repo_id, revision, offline = self.hub
            folder = Path(hf_hub_download(repo_id, MODEL_FILENAME, revision=revision, local_files_only=offline)).parent
        return load_model_dir(folder)[0]


def read_config(folder: str | Path) -> dict:
    """A model folder's config.json, checked to name the labels this package knows."""
    folder = Path(folder)
    config = json.loads((folder / CONFIG_FILENAME).read_text())
    labels = tuple(config.get("labels", ()))
    if labels != LABELS:
        raise ValueError(f"{folder}: model labels {labels} differ from {LABELS}")
    return config


def load_model_dir(folder: str | Path) -> tuple[Any, dict]:
    """Load `folder/emotion_cnn.keras` with Keras (safe mode, no pickles) and its `config.json`, checked to agree."""
    import keras  # training and evaluation only: serving reads the .onnx file (load_serving_dir)

    folder = Path(folder)
    config = read_config(folder)
    model = keras.saving.load_model(folder / MODEL_FILENAME, compile=False, safe_mode=True)
    if model.output_shape[-1] != len(LABELS):
        raise ValueError(f"{folder}: model has {model.output_shape[-1]} outputs, expected {len(LABELS)}")
    return model, config


def load_serving_dir(folder: str | Path, source: str, hub: tuple[str, str, bool] | None = None) -> LoadedModel:
    """A model folder for serving: `config.json` and an ONNX Runtime session on its INT8 or float .onnx file (see
    SERVED_FILENAMES), checked to take (N, 48, 48, 1) faces and give the 7 labels. Without an .onnx file the .keras
    one is loaded (TensorFlow)."""
    folder = Path(folder)
    config = read_config(folder)
    served = next((name for name in SERVED_FILENAMES if (folder / name).is_file()), MODEL_FILENAME)
    if served == MODEL_FILENAME:
        log.warning("%s has no %s: loading %s with TensorFlow (slower start, more memory)", folder, ONNX_FILENAME,
                    MODEL_FILENAME)
        loaded = LoadedModel(folder, config, source, None, MODEL_FILENAME, hub)
        loaded.model  # noqa: B018 - load (and check) it now, so that a broken folder fails here
        return loaded
    session = onnx_session(folder / served)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = tuple(inputs[0].shape[1:]) if len(inputs) == 1 else ()
    if shape != (INPUT_SIZE, INPUT_SIZE, 1) or inputs[0].name != "input":
        raise ValueError(f"{folder / served}: expected one input 'input' of (N, 48, 48, 1) faces")
    if outputs[0].shape[-1] != len(LABELS):
        raise ValueError(f"{folder / served}: model has {outputs[0].shape[-1]} outputs, expected {len(LABELS)}")
    return LoadedModel(folder, config, source, session, served, hub)


def export_onnx(model: Any, folder: str | Path, faces: np.ndarray, calibration: np.ndarray) -> dict:
    """Write the model's ONNX files beside its .keras file: `emotion_cnn.onnx`, checked against Keras on `faces`
    (real preprocessed faces: the validation set), and `emotion_cnn.int8.onnx` (what the app serves), calibrated on
    `calibration` (preprocessed training faces; a random 1024 are used) and checked to keep the float graph's top
    label on at least 97% of `faces`. Logs and returns what it wrote:
    {"onnx_max_abs_difference": ..., "int8_top_label_agreement": ...}, None for a file it could not write (the app
    then serves the float graph, or the .keras file on TensorFlow)."""
    from . import onnx_graph  # imports Keras: training only

    folder = Path(folder)
    for name in (INT8_FILENAME, ONNX_FILENAME):  # never leave a file from an earlier model beside this one
        (folder / name).unlink(missing_ok=True)
    report = {"onnx_max_abs_difference": None, "int8_top_label_agreement": None}
    try:
        report["onnx_max_abs_difference"] = onnx_graph.export(model, folder / ONNX_FILENAME, faces)
    except onnx_graph.UnsupportedModel as error:
        log.warning("Could not export the model to ONNX (%s). The app needs TensorFlow to serve this folder: it will "
                    "start slower and hold more memory.", error)
        return report
    log.info("wrote %s: ONNX Runtime and Keras differ by at most %.2g", folder / ONNX_FILENAME,
             report["onnx_max_abs_difference"])
    try:
        report["int8_top_label_agreement"] = onnx_graph.quantize(folder / ONNX_FILENAME, folder / INT8_FILENAME,
                                                                 calibration, faces)
    except onnx_graph.UnsupportedModel as error:
        log.warning("Not writing %s (%s): the app will serve the float graph, 4-6x slower.", INT8_FILENAME, error)
        return report
    log.info("wrote %s: it keeps the float graph's top label on %.1f%% of %d faces", folder / INT8_FILENAME,
             100 * report["int8_top_label_agreement"], len(faces))
    return report


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
    """Download `config.json` and the model file serving prefers at `revision` (the first of SERVED_FILENAMES the
    repo has: a model published before the .onnx files has only the .keras one), or take them from the cache;
    returns their folder."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    folder = Path(hf_hub_download(repo_id, CONFIG_FILENAME, revision=revision, local_files_only=offline)).parent
    for name in SERVED_FILENAMES:
        try:
            hf_hub_download(repo_id, name, revision=revision, local_files_only=offline)
            return folder
        except EntryNotFoundError:
            if name == SERVED_FILENAMES[-1]:
                raise
    return folder


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
            return load_serving_dir(repo_id, f"local:{repo_id}")
        from huggingface_hub import constants

        offline = constants.HF_HUB_OFFLINE or not _hub_reachable()
        try:
            source = f"{'hub-cache' if offline else 'hub'}:{repo_id}@{revision}"
            loaded = load_serving_dir(_download(repo_id, revision, offline), source, (repo_id, revision, offline))
            log.info("Using model %s", source)
            return loaded
        except Exception as error:  # noqa: BLE001 - any Hub or load failure means: use the bundled model
            if not fallback:
                raise
            from huggingface_hub.errors import LocalEntryNotFoundError

            if isinstance(error, LocalEntryNotFoundError):
                reason = "the Hub is unreachable and nothing is cached"
            else:
                reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            log.warning("Could not load %s@%s from the Hub (%s); falling back to the bundled model.", repo_id, revision, reason)
    loaded = load_serving_dir(BUNDLED_DIR, f"bundled:{BUNDLED_DIR}")
    log.info("Using the bundled model in %s", BUNDLED_DIR)
    return loaded


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
