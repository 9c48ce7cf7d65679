"""Batched emotion classification of preprocessed faces on ONNX Runtime, with optional blur, flip TTA and temperature.

Serving runs the `.onnx` file that `train.py` writes beside the `.keras` one, so this module imports neither
TensorFlow nor Keras. Training and evaluation may pass a Keras model instead: `emotion.onnx_graph` (which imports
Keras) converts it in memory, and TensorFlow runs the models it cannot convert.
"""

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort

from .calibration import apply_temperature
from .labels import LABELS
from .preprocess import INPUT_SIZE

log = logging.getLogger(__name__)
RUNTIMES = ("auto", "onnx", "tensorflow")


def onnx_session(model: str | Path | bytes) -> ort.InferenceSession:
    """An ONNX Runtime session (CPU) for an .onnx file or its bytes; its input is "input", NHWC float32."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    # Idle worker threads would otherwise spin after each call and take the CPU from face detection and decoding.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class Classifier:
    """(N, 48, 48, 1) float32 faces -> (N, 7) probabilities, in batched calls.

    `network` is an ONNX model (an `onnxruntime.InferenceSession`, an .onnx path or its bytes) or a Keras model.
    A Keras model runs on ONNX Runtime through `emotion.onnx_graph` with `runtime="auto"` and on a compiled
    TensorFlow function when it does not convert; "onnx" or "tensorflow" forces one. `self.runtime` says which runs.

    `tta="flip"` averages the prediction of each face and its mirror image (one batched call of 2N);
    `temperature` rescales the probabilities as softmax(log(p) / T) (fitted on validation data);
    `blur_sigma` > 0 softens each face with a Gaussian blur first. Training augmentation (zoom, rotation, shift)
    resamples every face bilinearly, which softens it, so a model may read sharp faces worse than it learned.
    """

    def __init__(self, network: Any, tta: str = "none", temperature: float = 1.0, blur_sigma: float = 0.0,
                 runtime: str = "auto"):
        if tta not in ("none", "flip"):
            raise ValueError(f"tta must be 'none' or 'flip', got {tta!r}")
        if blur_sigma < 0:
            raise ValueError(f"blur_sigma must be >= 0, got {blur_sigma}")
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self.tta = tta
        self.temperature = float(temperature)
        self.blur_sigma = float(blur_sigma)
        self.model = None  # the Keras model, when built from one
        self._predict = None
        if isinstance(network, ort.InferenceSession | str | Path | bytes):
            if runtime == "tensorflow":
                raise ValueError("an ONNX model runs on ONNX Runtime only: runtime must be 'auto' or 'onnx'")
            self._session = network if isinstance(network, ort.InferenceSession) else onnx_session(network)
        else:
            self.model = network
            self._session = None if runtime == "tensorflow" else self._keras_session(network, runtime)
            if self._session is None:
                self._predict = _tensorflow_function(network)
        self.runtime = "tensorflow" if self._session is None else "onnx"
        outputs = self._session.get_outputs()[0].shape[-1] if self._session else self.model.output_shape[-1]
        self.classes = outputs if isinstance(outputs, int) else len(LABELS)

    @staticmethod
    def _keras_session(model: Any, runtime: str) -> ort.InferenceSession | None:
        from . import onnx_graph  # imports Keras: only for a Keras model

        try:
            return onnx_graph.session(model)
        except Exception as error:  # noqa: BLE001 - any conversion or runtime failure leaves TensorFlow
            if runtime == "onnx":
                raise
            log.warning("running the classifier on TensorFlow (%s: %s)", type(error).__name__, error)
            return None

    @classmethod
    def from_config(cls, network: Any, config: dict) -> "Classifier":
        """The classifier a model folder's config.json describes (its TTA, blur and fitted temperature)."""
        return cls(network, tta=config.get("tta", "none"), temperature=config.get("temperature", 1.0),
                   blur_sigma=config.get("blur_sigma", 0.0))

    def predict(self, faces: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Probabilities (N, 7) float32 for preprocessed faces (N, 48, 48, 1); N may be 0."""
        faces = np.asarray(faces, dtype=np.float32)
        if len(faces) == 0:
            return np.zeros((0, self.classes), dtype=np.float32)
        probs = np.concatenate([self._run(faces[i : i + batch_size]) for i in range(0, len(faces), batch_size)])
        if self.temperature != 1.0:
            probs = apply_temperature(probs, self.temperature)
        return probs.astype(np.float32)

    def _run(self, faces: np.ndarray) -> np.ndarray:
        if self.blur_sigma:
            faces = np.stack([cv2.GaussianBlur(face, (0, 0), self.blur_sigma) for face in faces[..., 0]])[..., None]
        if self.tta == "none":
            return self._network(faces)
        # Mirror in NumPy and run both halves as one batch (one call costs less than two).
        both = self._network(np.concatenate([faces, faces[:, :, ::-1]]))
        return (both[: len(faces)] + both[len(faces) :]) / 2

    def _network(self, inputs: np.ndarray) -> np.ndarray:
        if self._session is not None:
            return self._session.run(None, {"input": np.ascontiguousarray(inputs)})[0]
        return self._predict(inputs).numpy()


def _tensorflow_function(model: Any):
    """`model` as a TensorFlow function traced once for every batch size (model.predict per frame costs several ms
    of Python overhead)."""
    import tensorflow as tf

    spec = tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 1], tf.float32)
    return tf.function(lambda faces: tf.cast(model(faces, training=False), tf.float32), input_signature=[spec],
                       reduce_retracing=True)
