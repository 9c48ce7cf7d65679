import numpy as np
import pytest

from emotion.preprocess import INPUT_SIZE, preprocess_face, to_gray


@pytest.mark.parametrize("shape", [(48, 48), (48, 48, 1), (100, 80, 3), (30, 30, 4), (640, 480, 3)])
def test_preprocess_gives_48x48x1_floats_in_unit_range(shape):
    face = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = preprocess_face(face)
    assert out.shape == (INPUT_SIZE, INPUT_SIZE, 1)
    assert out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_preprocess_keeps_a_48px_gray_face_exactly():
    face = np.arange(48 * 48, dtype=np.uint32).reshape(48, 48).astype(np.uint8)
    np.testing.assert_allclose(preprocess_face(face)[:, :, 0], face / 255.0, atol=1e-6)


def test_rgb_to_gray_uses_luma_weights():
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    assert to_gray(red)[0, 0] == 76  # 0.299 * 255


def test_bad_shape_is_refused():
    with pytest.raises(ValueError, match="image"):
        to_gray(np.zeros((4, 4, 2), np.uint8))
