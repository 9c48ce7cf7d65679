"""Facial emotion recognition: face detection, the FER2013 classifier, and annotation."""

from .detect import FaceDetector
from .labels import LABELS
from .recognizer import EmotionRecognizer, Face

__all__ = ["LABELS", "EmotionRecognizer", "Face", "FaceDetector"]
