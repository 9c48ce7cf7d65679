"""Drawing boxes and "happy 87%" labels, sized to stay readable from a 48 px crop to a 4K frame."""

from typing import Protocol

import cv2
import numpy as np

from .labels import COLORS

FONT = cv2.FONT_HERSHEY_SIMPLEX
MAX_SIDE = 2048  # annotate never enlarges an image beyond this


class Annotatable(Protocol):
    box: tuple[int, int, int, int]
    label: str
    confidence: float


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def annotate(image: np.ndarray, faces: list[Annotatable], min_side: int | None = None) -> np.ndarray:
    """A new RGB uint8 image with a box and "label NN%" tag per face, one colour per emotion.

    With `min_side`, images whose shorter side is smaller are enlarged first (boxes scaled to match), so that a
    48 px crop can carry a legible label.
    """
    out = np.ascontiguousarray(image[:, :, :3] if image.ndim == 3 else np.dstack([image] * 3), dtype=np.uint8).copy()
    # Enlarge so the short side reaches min_side, but never past MAX_SIDE on the long side (a 1x2048 strip).
    scale = min(min_side / min(out.shape[:2]), MAX_SIDE / max(out.shape[:2])) if min_side else 1.0
    if scale > 1.0:
        out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    else:
        scale = 1.0
    height, width = out.shape[:2]
    short = min(height, width)
    line = max(1, round(short / 250))
    for face in faces:
        x, y, w, h = (int(round(v * scale)) for v in face.box)
        color = COLORS.get(face.label, (255, 255, 255))
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), color, line, cv2.LINE_AA)
        text = f"{face.label} {face.confidence * 100:.0f}%"
        # Text height follows the face (readable next to it) within bounds set by the whole image. The lower bound
        # follows the width too: a phone shows the whole image 390 px wide, where the tags must still be read.
        font_scale = float(np.clip(w / 260, max(short / 1400, width / 900), max(short, width / 2) / 250))
        font_scale = max(font_scale, 0.3)
        thickness = max(1, round(font_scale * 2))
        (tw, th), base = cv2.getTextSize(text, FONT, font_scale, thickness)
        pad = max(2, th // 4)
        top = y - th - base - 2 * pad
        if top < 0:  # no room above the box: put the tag inside its top edge
            top = min(max(y, 0), max(height - th - base - 2 * pad, 0))
        left = int(np.clip(x, 0, max(width - tw - 2 * pad, 0)))
        cv2.rectangle(out, (left, top), (left + tw + 2 * pad, top + th + base + 2 * pad), color, cv2.FILLED)
        cv2.putText(out, text, (left + pad, top + pad + th), FONT, font_scale, _text_color(color), thickness, cv2.LINE_AA)
    return out
