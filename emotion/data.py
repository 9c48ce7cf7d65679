"""Reading folder-per-label face data sets (FER2013 layout) into arrays."""

from pathlib import Path

import cv2
import numpy as np

from .labels import LABELS
from .preprocess import resize_face

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VAL_SPLIT_NAMES = ("val", "validation", "test")


def load_faces(root: str | Path) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Load `root/<label>/*` as (N, 48, 48) uint8 grayscale faces in their own pixels (resized to 48 px if needed, not
    normalised), (N,) int label indices and the files' paths.

    Folders must be named after labels in `LABELS`; a missing label folder is allowed, an unknown one is an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    unknown = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in LABELS)
    if unknown:
        raise ValueError(f"{root}: folders {unknown} are not emotion labels {list(LABELS)}")
    images, targets, paths = [], [], []
    for index, label in enumerate(LABELS):
        folder = root / label
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if gray is None:
                raise ValueError(f"cannot decode image {path}")
            images.append(resize_face(gray))
            targets.append(index)
            paths.append(path)
    if not images:
        raise ValueError(f"no images found under {root}")
    return np.stack(images), np.asarray(targets, dtype=np.int64), paths


def stratified_split(
    targets: np.ndarray, val_fraction: float = 0.2, seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified train/validation split (the seed report's 80:20), fixed by `seed`."""
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for label in np.unique(targets):
        idx = rng.permutation(np.flatnonzero(targets == label))
        n_val = int(round(len(idx) * val_fraction))
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(val_idx))


Split = tuple[np.ndarray, np.ndarray, list[Path]]  # uint8 faces, labels, paths (see load_faces)


def load_dataset(root: str | Path, val_fraction: float = 0.2, seed: int = 42) -> tuple[Split, Split]:
    """Load (train, val) splits (`load_faces`) from `root/train` + `root/{val,validation,test}`, or split one folder."""
    root = Path(root)
    val_dir = next((root / name for name in VAL_SPLIT_NAMES if (root / name).is_dir()), None)
    if (root / "train").is_dir() and val_dir is not None:
        return load_faces(root / "train"), load_faces(val_dir)
    x, y, paths = load_faces(root)
    train_idx, val_idx = stratified_split(y, val_fraction, seed)
    pick = lambda idx: (x[idx], y[idx], [paths[i] for i in idx])  # noqa: E731
    return pick(train_idx), pick(val_idx)
