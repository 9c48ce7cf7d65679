"""The single preprocessing step shared by training and inference."""

import cv2
import numpy as np

INPUT_SIZE = 48  # FER2013 faces are 48x48 grayscale


def to_gray(image: np.ndarray) -> np.ndarray:
    """Return a 2-D uint8 grayscale view of an RGB, RGBA or grayscale image."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2GRAY)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {image.shape}")


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Return an HxWx3 uint8 RGB version of an RGB, RGBA or grayscale image."""
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)
    return cv2.cvtColor(to_gray(image), cv2.COLOR_GRAY2RGB)


def preprocess_face(face: np.ndarray) -> np.ndarray:
    """Turn a face crop (any size, gray/RGB/RGBA uint8) into the model input: (48, 48, 1) float32 in [0, 1]."""
    gray = to_gray(face)
    if gray.shape != (INPUT_SIZE, INPUT_SIZE):
        shrinking = gray.shape[0] > INPUT_SIZE or gray.shape[1] > INPUT_SIZE
        gray = cv2.resize(
            gray, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        )
    return (gray.astype(np.float32) * (1.0 / 255.0))[:, :, None]
