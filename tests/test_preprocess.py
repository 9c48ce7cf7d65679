import cv2
import numpy as np
import pytest

from emotion.preprocess import (FRAME_SCALE, INPUT_SIZE, NORMALIZATIONS, FaceInput, crop_face, face_input, face_square,
                                normalize, preprocess_face, to_gray)


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("shape", [(48, 48), (48, 48, 1), (100, 80, 3), (30, 30, 4), (640, 480, 3)])
def test_preprocess_gives_48x48x1_floats_in_unit_range(shape, normalization):
    face = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = preprocess_face(face, normalization)
    assert out.shape == (INPUT_SIZE, INPUT_SIZE, 1)
    assert out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_without_normalisation_a_48px_gray_face_is_kept_exactly():
    face = np.arange(48 * 48, dtype=np.uint32).reshape(48, 48).astype(np.uint8)
    np.testing.assert_allclose(preprocess_face(face, "none")[:, :, 0], face / 255.0, atol=1e-6)


def test_rgb_to_gray_uses_luma_weights():
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    assert to_gray(red)[0, 0] == 76  # 0.299 * 255


def test_bad_shape_and_settings_are_refused():
    with pytest.raises(ValueError, match="image"):
        to_gray(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="normalization"):
        normalize(np.zeros((4, 4), np.uint8), "sharpen")
    with pytest.raises(ValueError, match="scale"):
        FaceInput(scale=float("nan"))
    with pytest.raises(ValueError, match="shift_up"):
        FaceInput(shift_up=5)


def dark_face(seed: int = 0) -> np.ndarray:
    """A dim, low-contrast face-like pattern (pixels 20-60), as a camera gives in poor light."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:48, 0:48]
    pattern = 20 + 20 * (np.sin(xx / 5) + 1) + rng.normal(0, 2, (48, 48)) + (yy > 30) * 8
    return np.clip(pattern, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("normalization, stretch", [("equalize", 2.5), ("clahe", 1.5), ("standardize", 2.5)])
def test_normalisation_stretches_a_dark_crop(normalization, stretch):
    face = dark_face()
    assert normalize(face, normalization).std() > stretch * face.std()  # CLAHE limits the stretch by design


@pytest.mark.parametrize("normalization", ["equalize", "standardize"])
def test_global_normalisation_reads_a_face_alike_in_any_light(normalization):
    face = dark_face()
    brighter = np.clip(face.astype(np.int32) * 3 + 40, 0, 255).astype(np.uint8)  # the same face lit up
    difference = normalize(brighter, normalization).astype(np.float64) - normalize(face, normalization)
    assert np.abs(difference).mean() < 2
    # CLAHE, a local equaliser, keeps the overall light level: the same face lit up is another input.
    assert np.abs(normalize(brighter, "clahe").astype(np.float64) - normalize(face, "clahe")).mean() > 50


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("level", [0, 3, 128, 255])
def test_a_flat_crop_stays_flat_and_finite(normalization, level):
    out = preprocess_face(np.full((60, 60), level, np.uint8), normalization)
    assert np.isfinite(out).all() and len(np.unique(out)) == 1  # no division by a zero spread, no made-up texture


def test_equalisation_matches_how_the_fer2013_jpegs_were_made():
    face = dark_face(1)
    np.testing.assert_array_equal(normalize(face, "equalize"), cv2.equalizeHist(face))
    assert abs(normalize(face, "equalize").mean() - 128) < 10


def test_the_crop_is_a_square_of_the_framing_scale_around_the_box():
    image = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    x, y, side = face_square((50, 60, 40, 50), scale=1.2, shift_up=0.1)
    assert side == 60 and x == 40 and y == 50  # centre (70, 85 - 5), side 1.2 x 50
    np.testing.assert_array_equal(crop_face(image, (50, 60, 40, 50), 1.2, 0.1), image[50:110, 40:100])


def test_what_lies_beyond_the_border_is_padded_never_clipped():
    image = np.random.default_rng(1).integers(0, 256, (100, 100), dtype=np.uint8)
    box = (-20, 70, 40, 40)  # reaches past the left and the bottom border
    x, y, side = face_square(box)
    crop = crop_face(image, box)
    assert crop.shape == (side, side) and side == round(40 * FRAME_SCALE)
    inside = image[max(y, 0) : y + side, 0 : x + side]
    np.testing.assert_array_equal(crop[: inside.shape[0], -x:], inside)  # the image where it is, unmoved...
    np.testing.assert_array_equal(crop[:, 0], crop[:, -x])  # ...the left padding repeats the border column
    np.testing.assert_array_equal(crop[-1], crop[inside.shape[0] - 1])  # ...and the bottom padding the last row
    far = crop_face(image, (500, 500, 10, 10))  # wholly outside: still a square of the framing size
    assert far.shape == (round(10 * FRAME_SCALE),) * 2


def test_training_faces_and_app_faces_go_through_the_same_path():
    """A 48 px face crop read as a training face (train.model_inputs) gives exactly what the app makes of a photo
    holding that crop at the framed box (face_input)."""
    train = pytest.importorskip("train")
    face = dark_face(2)
    inner = round(48 / FRAME_SCALE)  # a box whose framing is the whole 48 px face
    photo = cv2.copyMakeBorder(face, 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=0)
    box = face_square((0, 0, inner, inner), shift_up=0.0)
    assert box[2] == 48
    app_input = face_input(photo, (40 + (48 - inner) // 2, 40 + (48 - inner) // 2, inner, inner), shift_up=0.0)
    train_input = train.model_inputs(face[None, :, :, None], "equalize")[0]
    np.testing.assert_array_equal(app_input, train_input)
    np.testing.assert_array_equal(FaceInput("equalize", shift_up=0.0).whole(face)[0], train_input)
