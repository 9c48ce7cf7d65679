"""Per-face tracking across video frames: stable ids, smoothing so that labels do not flicker, detection every N frames."""

from dataclasses import dataclass

import numpy as np

from .detect import Box
from .labels import LABELS
from .recognizer import EmotionRecognizer, Face, face_from_probs


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    inter_w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    inter_h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = inter_w * inter_h
    union = aw * ah + bw * bh - inter
    return inter / union if union else 0.0


@dataclass
class _Track:
    id: int  # 1, 2, ... in the order faces first appeared (left to right if at once); never reused in a stream
    box: np.ndarray  # float (x, y, w, h), the detector's box (it may reach past the image border)
    probs: np.ndarray | None  # (7,) smoothed probabilities; None until the track's first classification
    missed: int = 0


@dataclass(frozen=True)
class TrackedFace:
    """A face on one frame with the id of its track: the same person keeps the same id while they stay in view."""

    id: int
    face: Face


class FaceTracker:
    """Follows faces through a stream: boxes matched by overlap, probabilities averaged exponentially.

    `smoothing` in [0, 1) is the weight kept from the past per frame (0 = no smoothing). With `detect_every=N`
    the detector runs on every Nth frame and the other frames reuse the tracked boxes (classification still runs
    on each frame). A track not seen for `max_missed` detections is dropped; each new track gets the next id
    (1, 2, ...), so a face that leaves and comes back later is counted as a new one. With `hold` (live views), a
    missed face is still reported at its last box until it is dropped, so that boxes do not blink; without it (data),
    only faces seen at the latest detection are reported, and a missed one keeps its id if it comes back in time.
    """

    def __init__(
        self, recognizer: EmotionRecognizer, smoothing: float = 0.6, detect_every: int = 1, max_missed: int = 2,
        hold: bool = True,
    ):
        if not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        if detect_every < 1 or max_missed < 0:
            raise ValueError(f"detect_every must be >= 1 and max_missed >= 0, got {detect_every} and {max_missed}")
        self.recognizer = recognizer
        self.smoothing = smoothing
        self.detect_every = detect_every
        self.max_missed = max_missed
        self.hold = hold
        self.tracks: list[_Track] = []
        self.frames = 0
        self.next_id = 1

    def update(self, rgb: np.ndarray, min_face_size: int | None = None) -> list[Face]:
        """Detect (or reuse boxes), classify and smooth; returns the faces to draw on this frame."""
        return [tracked.face for tracked in self.track(rgb, min_face_size)]

    def track(self, rgb: np.ndarray, min_face_size: int | None = None) -> list[TrackedFace]:
        """As `update`, with each face's track id."""
        if self.frames % self.detect_every == 0 or not self.tracks:
            boxes, _ = self.recognizer.find_faces(rgb, min_face_size, crop_fallback=False)
            self._match(boxes)
        self.frames += 1
        tracks = [track for track in self.tracks if self.hold or track.missed == 0]
        boxes = [tuple(int(round(v)) for v in track.box) for track in tracks]
        faces = self.recognizer.classify_boxes(rgb, boxes)
        keep = self.smoothing
        for track, face in zip(tracks, faces):
            fresh = np.array([face.probabilities[label] for label in LABELS])
            track.probs = fresh if track.probs is None else keep * track.probs + (1 - keep) * fresh
        # face.box, not track.box: the recognizer gives the box as shown (clipped to the image).
        return [TrackedFace(track.id, face_from_probs(face.box, track.probs)) for face, track in zip(faces, tracks)]

    def _match(self, boxes: list[Box]) -> None:
        """Greedy IoU matching of new detections to tracks; unmatched detections start tracks."""
        unmatched = list(range(len(boxes)))
        for track in self.tracks:
            scores = [iou(tuple(track.box), boxes[i]) for i in unmatched]
            if scores and max(scores) > 0.3:
                best = unmatched.pop(int(np.argmax(scores)))
                # Light box smoothing too: detector boxes jitter by a few pixels between frames.
                track.box = 0.5 * track.box + 0.5 * np.asarray(boxes[best], dtype=float)
                track.missed = 0
            else:
                track.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        for i in sorted(unmatched, key=lambda i: boxes[i][0]):  # faces that appear together: numbered left to right
            self.tracks.append(_Track(self.next_id, np.asarray(boxes[i], dtype=float), None))
            self.next_id += 1

    def reset(self) -> None:
        """Forget all faces (a new stream starts); ids start again from 1."""
        self.tracks, self.frames, self.next_id = [], 0, 1
