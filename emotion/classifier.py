"""Batched, compiled emotion classification of preprocessed faces, with optional flip TTA and temperature."""

import keras
import numpy as np
import tensorflow as tf

from .preprocess import INPUT_SIZE


class Classifier:
    """Wraps a Keras model in one compiled function: (N, 48, 48, 1) float32 -> (N, 7) probabilities.

    `tta="flip"` averages the prediction of each face and its mirror image (one batched call of 2N);
    `temperature` rescales the probabilities as softmax(log(p) / T) (fitted on validation data).
    """

    def __init__(self, model: keras.Model, tta: str = "none", temperature: float = 1.0):
        if tta not in ("none", "flip"):
            raise ValueError(f"tta must be 'none' or 'flip', got {tta!r}")
        self.model = model
        self.tta = tta
        self.temperature = float(temperature)
        spec = tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 1], tf.float32)
        # One trace for every batch size; model.predict per frame costs several ms of Python overhead.
        self._predict = tf.function(self._forward, input_signature=[spec], reduce_retracing=True)

    def _forward(self, faces: tf.Tensor) -> tf.Tensor:
        if self.tta == "flip":
            count = tf.shape(faces)[0]
            both = self.model(tf.concat([faces, tf.reverse(faces, axis=[2])], axis=0), training=False)
            probs = (both[:count] + both[count:]) / 2.0
        else:
            probs = self.model(faces, training=False)
        probs = tf.cast(probs, tf.float32)
        return tf.nn.softmax(tf.math.log(tf.maximum(probs, 1e-7)) / self.temperature, axis=-1)

    def predict(self, faces: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Probabilities (N, 7) float32 for preprocessed faces (N, 48, 48, 1); N may be 0."""
        faces = np.asarray(faces, dtype=np.float32)
        if len(faces) == 0:
            return np.zeros((0, self.model.output_shape[-1]), dtype=np.float32)
        chunks = [self._predict(faces[i : i + batch_size]).numpy() for i in range(0, len(faces), batch_size)]
        return np.concatenate(chunks)
