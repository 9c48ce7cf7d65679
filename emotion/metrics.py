"""Classification metrics in the seed report's terms: accuracy, precision, recall, F1 and cross-entropy loss."""

import numpy as np

from .labels import LABELS


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = len(LABELS)) -> np.ndarray:
    """(num_classes, num_classes) counts; rows are true labels, columns predictions (-1, no prediction, is left out)."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    made = y_pred >= 0
    np.add.at(matrix, (y_true[made], y_pred[made]), 1)
    return matrix


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """ECE: the confidence-weighted gap between confidence and accuracy over equal-width bins."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            ece += in_bin.mean() * abs(confidence[in_bin].mean() - correct[in_bin].mean())
    return float(ece)


def compute_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """All metrics for integer labels `y_true` (N,) and predicted probabilities `probs` (N, 7).

    A row of zeros is no prediction (an end-to-end run that found no face): it counts as wrong everywhere.
    Balanced accuracy is the mean recall over the classes present.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(y_true), len(LABELS)):
        raise ValueError(f"expected probabilities of shape {(len(y_true), len(LABELS))}, got {probs.shape}")
    made = probs.sum(axis=1) > 0
    y_pred = np.where(made, probs.argmax(axis=1), -1)
    matrix = confusion_matrix(y_true, y_pred)
    support = np.bincount(y_true, minlength=len(LABELS))  # misses (no prediction) included
    predicted = matrix.sum(axis=0)
    true_pos = np.diag(matrix)
    precision = np.divide(true_pos, predicted, out=np.zeros(len(LABELS)), where=predicted > 0)
    recall = np.divide(true_pos, support, out=np.zeros(len(LABELS)), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(len(LABELS)), where=precision + recall > 0)
    present = support > 0  # macro averages skip classes absent from the data set
    weights = support / support.sum()
    loss = -np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-7, 1.0)).mean()
    return {
        "samples": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()),
        "loss": float(loss),
        "balanced_accuracy": float(recall[present].mean()),
        "no_prediction": int((~made).sum()),
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
        "weighted_precision": float((precision * weights).sum()),
        "weighted_recall": float((recall * weights).sum()),
        "weighted_f1": float((f1 * weights).sum()),
        "ece": expected_calibration_error(y_true[made], probs[made]),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(LABELS)
        },
        "confusion_matrix": matrix.tolist(),
    }


def format_metrics(metrics: dict) -> str:
    """A plain-text table of `compute_metrics` output."""
    lines = [f"{'label':<10} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}"]
    for label, row in metrics["per_class"].items():
        lines.append(
            f"{label:<10} {row['precision']:>9.3f} {row['recall']:>7.3f} {row['f1']:>7.3f} {row['support']:>8d}"
        )
    for avg in ("macro", "weighted"):
        lines.append(
            f"{avg + ' avg':<10} {metrics[avg + '_precision']:>9.3f} {metrics[avg + '_recall']:>7.3f} "
            f"{metrics[avg + '_f1']:>7.3f} {metrics['samples']:>8d}"
        )
    lines.append(
        f"accuracy {metrics['accuracy']:.4f}   balanced accuracy {metrics['balanced_accuracy']:.4f}   "
        f"macro F1 {metrics['macro_f1']:.4f}   cross-entropy loss {metrics['loss']:.4f}   ECE {metrics['ece']:.4f}   "
        f"({metrics['samples']} images)"
    )
    if metrics.get("no_prediction"):
        lines.append(f"no face found in {metrics['no_prediction']} images (counted as wrong)")
    return "\n".join(lines)
