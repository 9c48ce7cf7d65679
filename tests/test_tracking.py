import numpy as np
import pytest

from emotion import EmotionRecognizer
from emotion.tracking import FaceTracker, iou
from photos import grace_hopper_rgb


@pytest.fixture(scope="module")
def recognizer():
    return EmotionRecognizer.load(repo_id="bundled")


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)


def test_smoothing_damps_frame_to_frame_changes(recognizer):
    photo = grace_hopper_rgb()
    rng = np.random.default_rng(0)
    frames = [np.clip(photo + rng.normal(0, 25, photo.shape), 0, 255).astype(np.uint8) for _ in range(8)]

    def jitter(tracker):
        probs = [list(tracker.update(f)[0].probabilities.values()) for f in frames]
        return np.abs(np.diff(probs, axis=0)).sum(axis=1).mean()

    raw, smooth = jitter(FaceTracker(recognizer, smoothing=0.0)), jitter(FaceTracker(recognizer, smoothing=0.8))
    assert smooth < raw * 0.6


def test_detect_every_n_frames_reuses_tracked_boxes(recognizer, monkeypatch):
    photo = grace_hopper_rgb()
    tracker = FaceTracker(recognizer, detect_every=3)
    calls = []
    original = recognizer.detector.detect
    monkeypatch.setattr(recognizer.detector, "detect", lambda *a, **k: calls.append(1) or original(*a, **k))
    faces = [tracker.update(photo) for _ in range(6)]
    assert len(calls) == 2
    assert all(len(f) == 1 for f in faces)
    assert sum(faces[-1][0].probabilities.values()) == pytest.approx(1.0)


def test_faces_that_leave_are_dropped(recognizer):
    tracker = FaceTracker(recognizer, max_missed=1)
    assert len(tracker.update(grace_hopper_rgb())) == 1
    empty = np.full_like(grace_hopper_rgb(), 120)
    assert len(tracker.update(empty)) == 1  # one missed detection is bridged
    assert tracker.update(empty) == []
