"""FER+ labels (Microsoft's relabelling of FER2013, MIT licence): 10 annotators' votes per face.

The votes come as `ferplus_votes.csv` (columns split, label, file, then neutral, happiness, surprise, sadness, anger,
disgust, fear, contempt, unknown, NF). The model keeps the 7 FER2013 labels, so contempt, unknown and not-a-face
votes are dropped from the distributions.
"""

import csv
from pathlib import Path

import numpy as np

from .labels import LABELS

VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")
# The FER+ column of each of our labels, in LABELS order.
LABEL_COLUMNS = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness", "neutral": "neutral",
                 "sad": "sadness", "surprise": "surprise"}
VOTES_FILENAME = "ferplus_votes.csv"


def read_votes(path: str | Path) -> dict[str, np.ndarray]:
    """{file stem: (10,) vote counts in VOTE_COLUMNS order}; a stem names the same face as JPEG or original PNG."""
    votes = {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"file", *VOTE_COLUMNS} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path} is not a FER+ votes file: columns {sorted(missing)} are missing")
        for row in reader:
            try:
                counts = [int(row[column]) for column in VOTE_COLUMNS]
            except ValueError as error:
                raise ValueError(f"{path}: a vote count of {row['file']} is not a whole number ({error})") from None
            votes[Path(row["file"]).stem] = np.asarray(counts, dtype=np.int64)
    return votes


def find_votes(data: str | Path) -> Path | None:
    """The FER+ votes file for a data folder: in it, above it, or in a `fer2013/` folder beside one of those."""
    folder = Path(data).resolve()
    for parent in (folder, *folder.parents):
        for candidate in (parent / VOTES_FILENAME, parent / "fer2013" / VOTES_FILENAME):
            if candidate.is_file():
                return candidate
    return None


def votes_for(paths: list[Path], votes: dict[str, np.ndarray]) -> np.ndarray:
    """(N, 10) vote counts for the faces at `paths`; faces the file does not list get all zeros."""
    empty = np.zeros(len(VOTE_COLUMNS), np.int64)
    return np.stack([votes.get(Path(p).stem, empty) for p in paths]) if paths else np.zeros((0, len(VOTE_COLUMNS)))


def distributions(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft targets (N, 7) in LABELS order from (N, 10) votes, with contempt, unknown and not-a-face votes dropped,
    and a mask (N,) of the faces that have any vote left (the others get zeros and must be skipped)."""
    basic = votes[:, [VOTE_COLUMNS.index(LABEL_COLUMNS[label]) for label in LABELS]].astype(np.float64)
    total = basic.sum(axis=1)
    has_votes = total > 0
    probs = np.divide(basic, total[:, None], out=np.zeros_like(basic), where=has_votes[:, None])
    return probs.astype(np.float32), has_votes


def majority(votes: np.ndarray) -> np.ndarray:
    """The FER+ majority label index per face (N,), or -1 where there is no single basic majority: a tie for the most
    votes, or most votes for contempt, unknown or not a face (the FER+ protocol leaves those out)."""
    votes = np.asarray(votes)
    top = votes.max(axis=1)
    single = (votes == top[:, None]).sum(axis=1) == 1
    winner = votes.argmax(axis=1)
    column_to_label = {VOTE_COLUMNS.index(column): LABELS.index(label) for label, column in LABEL_COLUMNS.items()}
    labels = np.array([column_to_label.get(int(c), -1) for c in winner], dtype=np.int64)
    return np.where(single & (top > 0), labels, -1)
