"""`EmotionRecognizer`: faces in, labelled boxes out. The public entry point of the package."""

import logging
from dataclasses import dataclass, field

import numpy as np

from . import model_store
from .annotate import annotate
from .classifier import Classifier
from .detect import DEFAULT_MIN_FACE, Box, FaceDetector, clip_box
from .labels import LABELS
from .preprocess import INPUT_SIZE, FaceInput

log = logging.getLogger(__name__)

LEGIBLE_SIDE = 160  # annotate() enlarges smaller images so that their labels can be read


@dataclass(frozen=True)
class Face:
    """One classified face. `whole_image` is True when no face was detected and the image was taken as a crop."""

    box: Box
    label: str
    confidence: float
    probabilities: dict[str, float] = field(repr=False)
    whole_image: bool = False

    def to_dict(self) -> dict:
        """JSON-ready form: the API's face record."""
        return {
            "box": list(self.box),
            "label": self.label,
            "confidence": self.confidence,
            "probabilities": dict(self.probabilities),
            "whole_image": self.whole_image,
        }


class EmotionRecognizer:
    """Detects faces, classifies each into the 7 FER2013 emotions in one batched call, and draws the result."""

    def __init__(self, classifier: Classifier, detector: FaceDetector | None = None, source: str = "memory",
                 face_input: FaceInput | None = None):
        self.classifier = classifier
        self.detector = detector or FaceDetector()
        self.source = source
        self.face_input = face_input or FaceInput()

    @classmethod
    def load(
        cls, repo_id: str | None = None, revision: str | None = None, min_face_size: int = DEFAULT_MIN_FACE
    ) -> "EmotionRecognizer":
        """Load from the Hub at a pinned revision, falling back to the bundled `models/` copy (see `model_store.load`)."""
        loaded = model_store.load(repo_id, revision)
        classifier = loaded.classifier()  # ONNX Runtime on the .onnx file: no TensorFlow in the app
        recognizer = cls(classifier, FaceDetector(min_face_size), loaded.source, FaceInput.from_config(loaded.config))
        recognizer.classify_faces(np.zeros((1, INPUT_SIZE, INPUT_SIZE, 1), np.float32))  # trace once, not on request 1
        return recognizer

    def classify_faces(self, faces: np.ndarray) -> np.ndarray:
        """(N, 7) probabilities for preprocessed faces (N, 48, 48, 1)."""
        return self.classifier.predict(faces)

    def preprocess_boxes(self, rgb: np.ndarray, boxes: list[Box], whole_image: bool = False) -> np.ndarray:
        """The model input (N, 48, 48, 1) for the faces at detector `boxes` (framed and normalised as the model was
        trained: `emotion.preprocess`); with `whole_image`, the image is the one face crop, already framed."""
        return self.face_input.whole(rgb) if whole_image else self.face_input(rgb, boxes)

    def classify_boxes(self, rgb: np.ndarray, boxes: list[Box], whole_image: bool = False) -> list[Face]:
        """Classify the faces at detector `boxes` of an RGB image in one batched model call; each `Face.box` is its box
        clipped to the image."""
        if not boxes:
            return []
        probs = self.classify_faces(self.preprocess_boxes(rgb, boxes, whole_image))
        height, width = rgb.shape[:2]
        return [face_from_probs(clip_box(box, width, height), p, whole_image) for box, p in zip(boxes, probs)]

    def find_faces(
        self, rgb: np.ndarray, min_face_size: int | None = None, crop_fallback: bool = True
    ) -> tuple[list[Box], bool]:
        """The face boxes of `detect`, and whether they are the whole image taken as a face crop."""
        boxes = self.detector.detect(rgb, min_face_size)
        if not boxes and crop_fallback and self.detector.looks_like_face_crop(rgb):
            height, width = rgb.shape[:2]
            return [(0, 0, width, height)], True
        return boxes, False

    def detect(self, rgb: np.ndarray, min_face_size: int | None = None, crop_fallback: bool = True) -> list[Face]:
        """Find and classify every face in an HxWx3 uint8 RGB image, largest first.

        When no face is found but the image is itself a face crop, the whole image is classified and the
        result is marked `whole_image=True`.
        """
        _check_image(rgb)
        boxes, whole_image = self.find_faces(rgb, min_face_size, crop_fallback)
        return self.classify_boxes(rgb, boxes, whole_image)

    def annotate(self, rgb: np.ndarray, faces: list[Face], min_side: int | None = LEGIBLE_SIDE) -> np.ndarray:
        """A new RGB image with each face's box and "label NN%" tag (see `emotion.annotate.annotate`).

        Images whose shorter side is under `min_side` (default 160 px) come back enlarged so the tag stays legible:
        "happy 87%" cannot be read on a 48 px face crop. Pass `min_side=None` to keep the input size always.
        """
        return annotate(rgb, faces, min_side)


def face_from_probs(box: Box, probs: np.ndarray, whole_image: bool = False) -> Face:
    """A `Face` from its box and (7,) probabilities (renormalised to sum to 1)."""
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum()
    best = int(probs.argmax())
    return Face(
        box=tuple(int(v) for v in box),
        label=LABELS[best],
        confidence=float(probs[best]),
        probabilities={label: float(p) for label, p in zip(LABELS, probs)},
        whole_image=whole_image,
    )


def _check_image(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = getattr(rgb, "shape", None)
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got {type(rgb).__name__} {shape}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError("the image is empty")
