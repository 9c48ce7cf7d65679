"""Generated, learnable stand-ins for FER2013 folders: one stripe pattern per label (never real FER data), and
models with made-up trained statistics."""

from pathlib import Path

import cv2
import keras
import numpy as np

from emotion.labels import LABELS


def make_face_folders(root: Path, per_class: int, seed: int = 0, labels: tuple[str, ...] = LABELS) -> Path:
    """Write `root/<label>/<i>.png`, 48x48 grayscale, label k drawn as stripes of period k+2 plus noise."""
    rng = np.random.default_rng(seed)
    for k, label in enumerate(labels):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        stripes = ((np.arange(48) // (LABELS.index(label) + 2)) % 2 * 160 + 40).astype(np.float32)
        for i in range(per_class):
            image = np.tile(stripes[:, None], (1, 48)) + rng.normal(0, 20, (48, 48))
            cv2.imwrite(str(folder / f"{i}.png"), np.clip(image, 0, 255).astype(np.uint8))
    return root


def with_trained_statistics(model: keras.Model) -> keras.Model:
    """Random weights plus BatchNorm statistics away from their 0/1 defaults, so a wrong BN conversion shows."""
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.2, size))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size))
            layer.gamma.assign(rng.uniform(0.5, 1.5, size))
            layer.beta.assign(rng.normal(0, 0.2, size))
    return model


def chain(*layers: keras.layers.Layer) -> keras.Model:
    """A functional model of `layers` one after the other on a 48x48x1 input."""
    inputs = keras.Input((48, 48, 1))
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)
