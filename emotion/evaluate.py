"""Evaluate a model on a folder-per-label set of faces (PNG or JPEG), as face crops or end to end.

    python -m emotion.evaluate --data ../shared/data/fer2013-raw/val [--labels ferplus] [--model DIR_OR_REPO]
    python -m emotion.evaluate --data ../shared/data/sfew-train --e2e [--json FILE]

Each image is a face crop (FER2013) that goes through the model's preprocessing as it is; with `--e2e` each image is
a photo that goes through `EmotionRecognizer.detect`, exactly as in the app, and the largest face is scored (a photo
with no face counts as wrong). `--labels ferplus` scores against the FER+ majority of the 10 annotators' votes
(`ferplus_votes.csv`, found beside the data or given with --votes); faces with a tied or non-basic majority
(contempt, unknown, not a face) are left out. --model takes a model folder or a Hub repo id; by default the model the
app uses (Hub at the pinned revision, else the bundled models/). The model's config.json gives its preprocessing,
test-time augmentation and temperature; --normalization and --scale/--shift-up override them for measurement.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from . import ferplus, model_store
from .data import load_faces
from .metrics import compute_metrics, format_metrics
from .preprocess import NORMALIZATIONS, FaceInput
from .recognizer import EmotionRecognizer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m emotion.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder with one sub-folder per label")
    parser.add_argument("--model", default=None, help="model folder or Hub repo id (default: the app's model)")
    parser.add_argument("--revision", default=None, help="Hub revision when --model is a repo id")
    parser.add_argument("--labels", choices=["folders", "ferplus"], default="folders",
                        help="score against the label folders (default) or the FER+ majority")
    parser.add_argument("--votes", default=None, help="FER+ votes CSV (default: found beside or above --data)")
    parser.add_argument("--e2e", action="store_true", help="images are photos: detect, then score the largest face")
    parser.add_argument("--normalization", choices=NORMALIZATIONS, help="override the model's normalisation")
    parser.add_argument("--scale", type=float, help="override the model's framing scale (crop side / face box)")
    parser.add_argument("--shift-up", type=float, help="override the model's framing shift (box heights)")
    parser.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    return parser.parse_args(argv)


def face_input(config: dict, args: argparse.Namespace) -> FaceInput:
    """The model's preprocessing, with the command line's overrides."""
    base = FaceInput.from_config(config)
    return FaceInput(args.normalization or base.normalization,
                     base.scale if args.scale is None else args.scale,
                     base.shift_up if args.shift_up is None else args.shift_up)


def predict_crops(recognizer: EmotionRecognizer, faces: np.ndarray) -> np.ndarray:
    """(N, 7) probabilities for (N, 48, 48) uint8 face crops, each preprocessed as a whole framed face."""
    inputs = np.concatenate([recognizer.face_input.whole(face) for face in faces]) if len(faces) else faces
    return recognizer.classify_faces(inputs)


def predict_photos(recognizer: EmotionRecognizer, paths: list[Path]) -> np.ndarray:
    """(N, 7) probabilities of the largest face of each photo, through `EmotionRecognizer.detect`; zeros where no
    face was found."""
    probs = np.zeros((len(paths), 7), np.float32)
    for i, path in enumerate(paths):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot decode image {path}")
        faces = recognizer.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if faces:
            probs[i] = [faces[0].probabilities[label] for label in faces[0].probabilities]
    return probs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    started = time.time()
    # A model named on the command line must be the one evaluated: no silent fallback to the bundled model.
    try:
        loaded = model_store.load(args.model, args.revision, fallback=args.model is None)
    except Exception as error:  # noqa: BLE001 - report any load failure in one line
        print(f"Cannot load --model {args.model}: it is not a model folder (emotion_cnn.keras + config.json) and "
              f"could not be loaded from the Hub ({type(error).__name__}).", file=sys.stderr)
        return 2
    try:
        settings = face_input(loaded.config, args)
    except ValueError as error:
        print(f"Invalid preprocessing setting: {error}", file=sys.stderr)
        return 2
    recognizer = EmotionRecognizer(loaded.classifier(), source=loaded.source,
                                   face_input=settings)

    faces, targets, paths = load_faces(args.data)
    if args.labels == "ferplus":
        votes_path = Path(args.votes) if args.votes else ferplus.find_votes(args.data)
        if votes_path is None or not votes_path.is_file():
            print(f"--labels ferplus needs the FER+ votes ({ferplus.VOTES_FILENAME}): none found beside {args.data}; "
                  "give it with --votes.", file=sys.stderr)
            return 2
        targets = ferplus.majority(ferplus.votes_for(paths, ferplus.read_votes(votes_path)))
        scored = targets >= 0
        if not scored.any():
            print(f"None of the faces in {args.data} has a FER+ majority in {votes_path}.", file=sys.stderr)
            return 2
        faces, targets, paths = faces[scored], targets[scored], [p for p, s in zip(paths, scored) if s]

    probs = predict_photos(recognizer, paths) if args.e2e else predict_crops(recognizer, faces)
    metrics = compute_metrics(targets, probs)
    metrics.update(model=loaded.source, data=str(args.data), labels=args.labels, e2e=args.e2e,
                   preprocessing=settings.to_config(), seconds=round(time.time() - started, 1))
    print(f"model: {loaded.source}\ndata: {args.data} ({'end to end' if args.e2e else 'face crops'}, "
          f"labels: {args.labels})\npreprocessing: {json.dumps(settings.to_config())}")
    print(format_metrics(metrics))
    print(f"({metrics['seconds']} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
