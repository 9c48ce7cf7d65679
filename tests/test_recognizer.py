from pathlib import Path

import cv2
import numpy as np
import pytest

from emotion import LABELS, EmotionRecognizer, Face
from photos import grace_hopper_rgb


@pytest.fixture(scope="module")
def recognizer():
    return EmotionRecognizer.load(repo_id="bundled")


def check_face(face: Face):
    assert face.label in LABELS
    assert set(face.probabilities) == set(LABELS)
    assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert face.confidence == max(face.probabilities.values())
    assert face.label == max(face.probabilities, key=face.probabilities.get)
    assert all(isinstance(v, int) for v in face.box)


def test_detects_and_classifies_a_real_photograph(recognizer):
    faces = recognizer.detect(grace_hopper_rgb())
    assert len(faces) == 1
    check_face(faces[0])
    assert not faces[0].whole_image
    assert faces[0].to_dict()["box"] == list(faces[0].box)


def test_a_face_crop_is_classified_as_a_whole(recognizer):
    photo = grace_hopper_rgb()
    (x, y, w, h) = recognizer.detect(photo)[0].box
    crop = cv2.resize(photo[y : y + h, x : x + w], (48, 48), interpolation=cv2.INTER_AREA)
    (face,) = recognizer.detect(crop)  # found by the detector itself, clipped to the crop
    assert face.box == (0, 0, 48, 48) and not face.whole_image


def test_a_face_crop_without_detection_is_classified_whole(recognizer):
    photo = grace_hopper_rgb()
    (x, y, w, h) = recognizer.detect(photo)[0].box
    # Inside BlazeFace's brows-to-chin box: too tight for the detector, which needs a little of the head around it.
    crop = photo[int(y + 0.1 * h) : int(y + 0.95 * h), int(x + 0.1 * w) : int(x + 0.9 * w)]
    crop = cv2.resize(crop, (48, 48), interpolation=cv2.INTER_AREA)
    assert recognizer.detector.detect(crop) == []
    faces = recognizer.detect(crop)
    assert len(faces) == 1 and faces[0].whole_image and faces[0].box == (0, 0, 48, 48)
    check_face(faces[0])
    assert recognizer.detect(crop, crop_fallback=False) == []
    # a 48 px crop comes back enlarged so that "label NN%" is legible
    assert recognizer.annotate(crop, faces).shape == (160, 160, 3)
    assert recognizer.annotate(crop, faces, min_side=None).shape == (48, 48, 3)


def test_no_face_gives_an_empty_list(recognizer):
    assert recognizer.detect(np.full((480, 640, 3), 90, np.uint8)) == []


def test_batched_classification_matches_one_by_one(recognizer):
    photo = grace_hopper_rgb()
    box = recognizer.detect(photo)[0].box
    shifted = (box[0] + 5, box[1] + 5, box[2], box[3])
    batched = recognizer.classify_boxes(photo, [box, shifted])
    single = [recognizer.classify_boxes(photo, [b])[0] for b in (box, shifted)]
    for a, b in zip(batched, single):
        np.testing.assert_allclose(list(a.probabilities.values()), list(b.probabilities.values()), atol=1e-4)


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), np.zeros((0, 5, 3), np.uint8), None])
def test_bad_arrays_are_refused_clearly(recognizer, bad):
    with pytest.raises(ValueError):
        recognizer.detect(bad)


def test_annotate_draws_on_a_copy(recognizer):
    photo = grace_hopper_rgb()
    original = photo.copy()
    faces = recognizer.detect(photo)
    out = recognizer.annotate(photo, faces)
    np.testing.assert_array_equal(photo, original)
    assert out.shape == photo.shape and out.dtype == np.uint8
    x, y, w, h = faces[0].box
    assert (out[y : y + h, x] != photo[y : y + h, x]).any()  # the box's left edge
    assert (out[: y, :] != photo[: y, :]).any()  # the label tag above the box
    np.testing.assert_array_equal(out[-20:], photo[-20:])  # nothing drawn far from the face


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# How a person reads each face of the example photos (examples/README.md), left to right.
HUMAN_READING = {
    "astronaut": ["happy"], "obama_smiling": ["happy"], "obama_speech": ["angry"], "grace_hopper": ["neutral"],
    "luis_pedro_coelho": ["neutral"], "biden_arms_crossed": ["neutral"], "group_three_women": ["neutral", "happy", "happy"],
}


def test_the_bundled_model_reads_full_size_photos_as_people_do(recognizer):
    # Full-size photographs, not FER2013 crops: detection, cropping and the classifier together. All 9 faces agree
    # with the human reading (the model before the first distilled one read 8 of them alike).
    agree = 0
    for name, expected in HUMAN_READING.items():
        rgb = cv2.cvtColor(cv2.imread(str(EXAMPLES / f"{name}.jpg")), cv2.COLOR_BGR2RGB)
        faces = sorted(recognizer.detect(rgb), key=lambda face: face.box[0])
        assert len(faces) == len(expected), name
        agree += sum(face.label == label for face, label in zip(faces, expected))
    assert agree >= 9


def test_a_face_cut_by_the_border_is_reported_inside_the_image_and_read_from_a_padded_crop(recognizer):
    photo = grace_hopper_rgb()
    (x, y, w, h) = recognizer.detector.detect(photo)[0]
    cut = photo[y + h // 3 :]
    raw, = recognizer.detector.detect(cut)
    face, = recognizer.detect(cut)
    assert raw[1] < 0 and face.box[1] == 0 and face.box[1] + face.box[3] <= cut.shape[0]  # clipped for the user...
    padded = recognizer.preprocess_boxes(cut, [raw])
    clipped = recognizer.preprocess_boxes(cut, [face.box])
    assert not np.array_equal(padded, clipped)  # ...but classified from the crop framed around the whole face box
    np.testing.assert_allclose(recognizer.classify_faces(padded)[0], list(face.probabilities.values()), atol=1e-5)
