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


def side_by_side(left: np.ndarray | None, right: np.ndarray | None) -> np.ndarray:
    """A frame with a portrait (or an empty grey space) on each side."""
    blank = np.full_like(grace_hopper_rgb(), 110)
    return np.concatenate([blank if left is None else left, blank if right is None else right], axis=1)


def test_faces_keep_their_ids_and_newcomers_get_the_next(recognizer):
    photo = grace_hopper_rgb()
    tracker = FaceTracker(recognizer)
    ids = [[t.id for t in tracker.track(frame)] for frame in (
        side_by_side(photo, None), side_by_side(photo, None), side_by_side(photo, photo), side_by_side(photo, photo),
    )]
    assert ids == [[1], [1], [1, 2], [1, 2]]
    faces = tracker.track(side_by_side(photo, photo))
    assert faces[0].face.box[0] < photo.shape[1] <= faces[1].face.box[0]  # face 1 is still the one on the left


def test_without_hold_a_missed_face_is_not_reported_but_keeps_its_id(recognizer):
    photo = grace_hopper_rgb()
    tracker = FaceTracker(recognizer, max_missed=2, hold=False)
    assert [t.id for t in tracker.track(side_by_side(photo, photo))] == [1, 2]
    assert [t.id for t in tracker.track(side_by_side(photo, None))] == [1]  # no stale box for the one who left
    assert [t.id for t in tracker.track(side_by_side(photo, photo))] == [1, 2]  # back in time: the same id
    for _ in range(3):
        tracker.track(side_by_side(photo, None))
    assert [t.id for t in tracker.track(side_by_side(photo, photo))] == [1, 3]  # gone too long: a new face


def test_reset_starts_the_ids_again(recognizer):
    tracker = FaceTracker(recognizer)
    tracker.track(grace_hopper_rgb())
    tracker.reset()
    assert [t.id for t in tracker.track(grace_hopper_rgb())] == [1]


@pytest.mark.parametrize("settings", [{"smoothing": 1.0}, {"smoothing": -0.1}, {"detect_every": 0}, {"max_missed": -1}])
def test_bad_settings_are_refused(recognizer, settings):
    with pytest.raises(ValueError):
        FaceTracker(recognizer, **settings)
