import numpy as np
import pytest

from emotion.calibration import apply_temperature, fit_temperature
from emotion.labels import LABELS
from emotion.metrics import compute_metrics, confusion_matrix, format_metrics


def one_hot_probs(pred, confidence=0.9):
    probs = np.full((len(pred), len(LABELS)), (1 - confidence) / (len(LABELS) - 1))
    probs[np.arange(len(pred)), pred] = confidence
    return probs


def test_metrics_on_a_known_case():
    y_true = np.array([0, 0, 1, 3, 3, 3])
    y_pred = np.array([0, 3, 1, 3, 3, 0])
    m = compute_metrics(y_true, one_hot_probs(y_pred))
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["angry"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["angry"]["recall"] == pytest.approx(0.5)
    assert m["per_class"]["happy"]["f1"] == pytest.approx(2 / 3)
    assert m["per_class"]["disgust"]["f1"] == pytest.approx(1.0)
    # macro averages cover the 3 classes present, weighted ones use supports 2, 1, 3
    assert m["macro_f1"] == pytest.approx((0.5 + 1.0 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((2 * 0.5 + 1.0 + 3 * 2 / 3) / 6)
    assert m["loss"] == pytest.approx(-(4 * np.log(0.9) + 2 * np.log(0.1 / 6)) / 6)
    assert np.array(m["confusion_matrix"]).sum() == 6
    assert "accuracy 0.6667" in format_metrics(m)


def test_confusion_matrix_rows_are_true_labels():
    matrix = confusion_matrix(np.array([2, 2, 5]), np.array([2, 4, 5]))
    assert matrix[2, 2] == 1 and matrix[2, 4] == 1 and matrix[5, 5] == 1 and matrix.sum() == 3


def test_temperature_fit_recovers_overconfidence():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 3000)
    pred = np.where(rng.random(3000) < 0.6, y, rng.integers(0, 7, 3000))
    overconfident = one_hot_probs(pred, 0.98)  # right 60 % of the time, claims 98 %
    temperature = fit_temperature(y, overconfident)
    assert temperature > 1.5
    before = compute_metrics(y, overconfident)["ece"]
    after = compute_metrics(y, apply_temperature(overconfident, temperature))["ece"]
    assert after < before / 3
    np.testing.assert_allclose(apply_temperature(overconfident, temperature).sum(axis=1), 1.0, rtol=1e-6)


def test_rows_without_a_prediction_count_as_wrong_and_keep_their_support():
    y = np.array([3, 3, 5, 5])
    probs = np.zeros((4, len(LABELS)))
    probs[0, 3] = probs[2, 5] = 1.0  # faces 1 and 3 had no face found: rows of zeros
    metrics = compute_metrics(y, probs)
    assert metrics["accuracy"] == 0.5 and metrics["no_prediction"] == 2
    assert metrics["per_class"]["happy"]["support"] == 2 and metrics["per_class"]["happy"]["recall"] == 0.5
    assert metrics["balanced_accuracy"] == 0.5 and metrics["per_class"]["happy"]["precision"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        compute_metrics(y, probs[:, :6])
