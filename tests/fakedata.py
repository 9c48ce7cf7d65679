"""Generated, learnable stand-ins for FER2013 folders: one stripe pattern per label (never real FER data)."""

from pathlib import Path

import cv2
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
