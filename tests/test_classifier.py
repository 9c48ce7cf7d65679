import cv2
import keras
import numpy as np
import pytest

from emotion import onnx_graph
from emotion.calibration import apply_temperature
from emotion.classifier import Classifier
from emotion.model_store import BUNDLED_DIR, INT8_FILENAME, ONNX_FILENAME, load


@pytest.fixture(scope="module")
def model():
    return load(repo_id="bundled").model


def faces(n):
    return np.random.default_rng(n).random((n, 48, 48, 1), dtype=np.float32)


@pytest.mark.parametrize("n", [0, 1, 5, 600])
def test_any_batch_size_gives_probabilities(model, n):
    probs = Classifier(model).predict(faces(n))
    assert probs.shape == (n, 7) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_flip_tta_averages_a_face_and_its_mirror(model):
    x = faces(3)
    plain = Classifier(model)
    expected = (plain.predict(x) + plain.predict(x[:, :, ::-1])) / 2
    np.testing.assert_allclose(Classifier(model, tta="flip").predict(x), expected, atol=1e-5)


def test_temperature_is_applied(model):
    x = faces(4)
    np.testing.assert_allclose(
        Classifier(model, temperature=2.0).predict(x), apply_temperature(Classifier(model).predict(x), 2.0), atol=1e-5
    )
    with pytest.raises(ValueError, match="tta"):
        Classifier(model, tta="tencrop")


def test_blur_softens_each_face_before_the_model(model):
    x = faces(3)
    blurred = np.stack([cv2.GaussianBlur(face[..., 0], (0, 0), 0.5) for face in x])[..., None]
    np.testing.assert_allclose(
        Classifier(model, tta="flip", blur_sigma=0.5).predict(x), Classifier(model, tta="flip").predict(blurred), atol=1e-5
    )
    assert not np.allclose(Classifier(model, blur_sigma=0.5).predict(x), Classifier(model).predict(x), atol=1e-4)
    with pytest.raises(ValueError, match="blur_sigma"):
        Classifier(model, blur_sigma=-1)


def test_from_config_takes_flip_blur_and_temperature(model):
    classifier = Classifier.from_config(model, {"tta": "flip", "blur_sigma": 0.5, "temperature": 0.9})
    assert (classifier.tta, classifier.blur_sigma, classifier.temperature) == ("flip", 0.5, 0.9)
    assert Classifier.from_config(model, {}).blur_sigma == 0.0  # model folders written before the blur existed


def test_onnx_runtime_runs_the_bundled_model_and_agrees_with_tensorflow(model):
    x = faces(5)
    fast = Classifier(model, tta="flip", blur_sigma=0.5, temperature=0.8)
    assert fast.runtime == "onnx"
    reference = Classifier(model, tta="flip", blur_sigma=0.5, temperature=0.8, runtime="tensorflow")
    assert reference.runtime == "tensorflow"
    np.testing.assert_allclose(fast.predict(x), reference.predict(x), atol=1e-5)
    with pytest.raises(ValueError, match="runtime"):
        Classifier(model, runtime="tflite")


def test_any_failure_to_start_onnx_runtime_leaves_tensorflow(model, monkeypatch, caplog):
    def broken(_):
        raise RuntimeError("no such provider")

    monkeypatch.setattr(onnx_graph, "session", broken)
    classifier = Classifier(model, tta="flip")
    assert classifier.runtime == "tensorflow" and "no such provider" in caplog.text
    assert classifier.predict(faces(2)).shape == (2, 7)
    with pytest.raises(RuntimeError, match="no such provider"):
        Classifier(model, runtime="onnx")


def test_a_model_onnx_cannot_translate_stays_on_tensorflow():
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.LayerNormalization(name="layer_norm")(inputs)
    unusual = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(x)))
    classifier = Classifier(unusual)
    assert classifier.runtime == "tensorflow"
    np.testing.assert_allclose(classifier.predict(faces(3)), unusual.predict(faces(3), verbose=0), atol=1e-5)
    with pytest.raises(ValueError, match="layer_norm"):
        Classifier(unusual, runtime="onnx")


def test_the_onnx_files_run_without_keras_and_agree_with_it(model, model_folder):
    x = faces(6)
    served = Classifier(model_folder / ONNX_FILENAME, tta="flip", blur_sigma=0.5, temperature=0.8)
    assert served.runtime == "onnx" and served.model is None
    reference = Classifier(model, tta="flip", blur_sigma=0.5, temperature=0.8, runtime="tensorflow")
    np.testing.assert_allclose(served.predict(x), reference.predict(x), atol=1e-5)
    assert served.predict(faces(0)).shape == (0, 7)
    same = Classifier((model_folder / ONNX_FILENAME).read_bytes())  # bytes work as well as a path
    np.testing.assert_allclose(same.predict(x), Classifier(model, runtime="tensorflow").predict(x), atol=1e-5)
    int8 = Classifier(BUNDLED_DIR / INT8_FILENAME).predict(faces(64))  # the served graph: quantised, close
    float_probs = Classifier(model_folder / ONNX_FILENAME).predict(faces(64))
    assert np.abs(int8 - float_probs).max() < 0.1 and (int8.argmax(1) == float_probs.argmax(1)).mean() >= 0.9
    with pytest.raises(ValueError, match="ONNX Runtime only"):
        Classifier(BUNDLED_DIR / INT8_FILENAME, runtime="tensorflow")
