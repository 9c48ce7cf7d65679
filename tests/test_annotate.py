import numpy as np
import pytest

from emotion.annotate import annotate
from emotion.labels import COLORS
from emotion.recognizer import face_from_probs


def happy_face(box):
    probs = np.full(7, 0.02)
    probs[3] = 0.88
    return face_from_probs(box, probs)


@pytest.mark.parametrize("size", [(48, 48), (480, 640), (2160, 3840)])
def test_box_and_tag_in_the_emotion_colour_at_every_size(size):
    h, w = size
    image = np.zeros((h, w, 3), np.uint8)
    box = (w // 4, h // 4, w // 2, h // 2)
    out = annotate(image, [happy_face(box)])
    assert out.shape == image.shape
    colour_pixels = np.all(out == COLORS["happy"], axis=2).sum()
    assert colour_pixels > 0.004 * h * w  # box outline plus filled tag
    # the tag's text is drawn on the tag: dark (black-text) pixels inside the yellow tag's bounding rows and columns
    tag_rows = np.flatnonzero(np.all(out == COLORS["happy"], axis=2).sum(axis=1) > w // 8)
    tag = out[tag_rows.min() : tag_rows.max() + 1, box[0] : box[0] + box[2]]
    assert (tag.max(axis=2) < 100).sum() > 10


def test_tag_height_scales_with_the_image():
    small = annotate(np.zeros((480, 640, 3), np.uint8), [happy_face((200, 150, 200, 200))])
    large = annotate(np.zeros((2160, 3840, 3), np.uint8), [happy_face((1200, 900, 1200, 1200))])
    tag_rows = lambda img: np.all(img == COLORS["happy"], axis=2).sum(axis=1).astype(bool).sum()
    assert tag_rows(large) > 3 * tag_rows(small)


def test_min_side_enlarges_tiny_images():
    out = annotate(np.zeros((48, 48, 3), np.uint8), [happy_face((0, 0, 48, 48))], min_side=256)
    assert out.shape == (256, 256, 3)


def test_min_side_never_enlarges_past_the_size_cap():
    out = annotate(np.zeros((1, 2048, 3), np.uint8), [], min_side=480)
    assert out.shape == (1, 2048, 3)
    assert max(annotate(np.zeros((100, 1500, 3), np.uint8), [], min_side=480).shape) == 2048


def test_grayscale_input_comes_back_rgb():
    out = annotate(np.zeros((100, 100), np.uint8), [])
    assert out.shape == (100, 100, 3)


def test_tags_stay_legible_when_a_wide_photo_is_shown_at_phone_width():
    from emotion.recognizer import Face

    photo = np.zeros((533, 1024, 3), np.uint8)
    small_face = Face((100, 200, 60, 60), "happy", 0.9, {})
    out = annotate(photo, [small_face])
    rows = np.flatnonzero((out != 0).any(axis=(1, 2)))
    tag_height = 200 - rows.min()  # the tag sits above the box
    assert tag_height * 390 / 1024 >= 8  # at least 8 px tall on a 390 px wide screen
