"""The one stage from an image and a face box to the model input, shared by training, evaluation, the bench and the app.

    face_input(image, box)  =  preprocess_face(crop_face(image, box))

`crop_face` frames the detector's box the way the model's training faces are framed (a square around the face,
what lies beyond the image border padded, never clipped); `preprocess_face` turns any face crop, a FER2013 face
included, into (48, 48, 1) float32: grayscale, resized, then normalised per face (`normalize`).
"""

from dataclasses import dataclass

import cv2
import numpy as np

INPUT_SIZE = 48  # FER2013 faces are 48x48 grayscale
NORMALIZATIONS = ("none", "equalize", "clahe", "standardize")
# Framing of a BlazeFace box (brows to chin) as a model input: a square `FRAME_SCALE` times the box's longer side,
# its centre `FRAME_SHIFT_UP` box heights above the box's. Chosen on sfew-train photos end to end (README, issue 14).
FRAME_SCALE = 1.24
FRAME_SHIFT_UP = 0.09

Box = tuple[int, int, int, int]  # x, y, w, h in image pixels


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


def face_square(box: Box, scale: float = FRAME_SCALE, shift_up: float = FRAME_SHIFT_UP) -> tuple[int, int, int]:
    """(x, y, side) of the square crop that frames a detector box; it may reach past the image."""
    x, y, w, h = (float(v) for v in box)
    side = max(1, int(round(max(w, h) * scale)))
    cx, cy = x + w / 2, y + h / 2 - shift_up * h
    return int(round(cx - side / 2)), int(round(cy - side / 2)), side


def crop_face(image: np.ndarray, box: Box, scale: float = FRAME_SCALE, shift_up: float = FRAME_SHIFT_UP) -> np.ndarray:
    """The square crop that frames `box` (see `face_square`); the part beyond the image border repeats its edge."""
    ih, iw = image.shape[:2]
    x0, y0, side = face_square(box, scale, shift_up)
    if x0 >= 0 and y0 >= 0 and x0 + side <= iw and y0 + side <= ih:
        return image[y0 : y0 + side, x0 : x0 + side]
    rows = np.clip(np.arange(y0, y0 + side), 0, ih - 1)  # beyond the border, the nearest edge pixel repeats
    cols = np.clip(np.arange(x0, x0 + side), 0, iw - 1)
    return image[rows[:, None], cols[None, :]]


def normalize(gray: np.ndarray, method: str = "equalize") -> np.ndarray:
    """Photometric normalisation of a 2-D uint8 face: the same face under other light gives (nearly) the same input.

    "equalize" is per-face histogram equalisation, as the published FER2013 JPEGs were made; "clahe" its local,
    contrast-limited form; "standardize" maps the face's mean and standard deviation to 128 and 64 (a flat face
    stays flat grey); "none" leaves the pixels.
    """
    if method == "equalize":
        return cv2.equalizeHist(gray)
    if method == "clahe":
        return cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)).apply(gray)
    if method == "standardize":
        pixels = gray.astype(np.float32)
        std = float(pixels.std())
        return np.clip(128 + (pixels - pixels.mean()) * (64 / max(std, 1.0)), 0, 255).round().astype(np.uint8)
    if method == "none":
        return gray
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {method!r}")


def resize_face(face: np.ndarray) -> np.ndarray:
    """A face crop (any size, gray/RGB/RGBA uint8) as 48x48 uint8 grayscale, its pixels otherwise unchanged."""
    gray = to_gray(face)
    if gray.shape != (INPUT_SIZE, INPUT_SIZE):
        shrinking = gray.shape[0] > INPUT_SIZE or gray.shape[1] > INPUT_SIZE
        gray = cv2.resize(
            gray, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        )
    return np.ascontiguousarray(gray)


def preprocess_face(face: np.ndarray, normalization: str = "equalize") -> np.ndarray:
    """A face crop (any size, gray/RGB/RGBA uint8) as the model input: (48, 48, 1) float32 in [0, 1]."""
    return (normalize(resize_face(face), normalization).astype(np.float32) * (1.0 / 255.0))[:, :, None]


def face_input(image: np.ndarray, box: Box, normalization: str = "equalize",
               scale: float = FRAME_SCALE, shift_up: float = FRAME_SHIFT_UP) -> np.ndarray:
    """The model input (48, 48, 1) for the face at a detector `box` of `image`."""
    return preprocess_face(crop_face(image, box, scale, shift_up), normalization)


def face_inputs(image: np.ndarray, boxes: list[Box], normalization: str = "equalize",
                scale: float = FRAME_SCALE, shift_up: float = FRAME_SHIFT_UP) -> np.ndarray:
    """`face_input` for every box, stacked: (N, 48, 48, 1); N may be 0."""
    if not boxes:
        return np.zeros((0, INPUT_SIZE, INPUT_SIZE, 1), np.float32)
    return np.stack([face_input(image, box, normalization, scale, shift_up) for box in boxes])


@dataclass(frozen=True)
class FaceInput:
    """A model's preprocessing settings (its config.json): `face_inputs` with them, for every box of an image."""

    normalization: str = "equalize"
    scale: float = FRAME_SCALE
    shift_up: float = FRAME_SHIFT_UP

    def __post_init__(self):
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if not (np.isfinite(self.scale) and 0.5 <= self.scale <= 3):
            raise ValueError(f"framing scale must be between 0.5 and 3, got {self.scale}")
        if not (np.isfinite(self.shift_up) and abs(self.shift_up) <= 1):
            raise ValueError(f"framing shift_up must be between -1 and 1, got {self.shift_up}")

    @classmethod
    def from_config(cls, config: dict) -> "FaceInput":
        """The settings in a model's config.json; models from before they were recorded read unnormalised pixels."""
        framing = config.get("framing", {})
        return cls(config.get("normalization", "none"), framing.get("scale", FRAME_SCALE),
                   framing.get("shift_up", FRAME_SHIFT_UP))

    def to_config(self) -> dict:
        return {"normalization": self.normalization, "framing": {"scale": self.scale, "shift_up": self.shift_up}}

    def __call__(self, image: np.ndarray, boxes: list[Box]) -> np.ndarray:
        return face_inputs(image, boxes, self.normalization, self.scale, self.shift_up)

    def whole(self, face: np.ndarray) -> np.ndarray:
        """The model input (1, 48, 48, 1) for an image that is itself a framed face crop (a FER2013 face)."""
        return preprocess_face(face, self.normalization)[None]
