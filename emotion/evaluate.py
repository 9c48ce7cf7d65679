"""Evaluate a model on a folder-per-label set of face crops.

    python -m emotion.evaluate --data ../shared/data/fer2013/val [--model PATH_OR_REPO] [--json FILE]

--model takes a model folder (emotion_cnn.keras + config.json) or a Hub repo id; by default the model the app
uses (Hub at the pinned revision, else the bundled models/). Test-time augmentation and temperature come from the
model's config.json, exactly as in the app.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from .classifier import Classifier
from .data import load_folder
from .metrics import compute_metrics, format_metrics
from . import model_store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emotion.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder with one sub-folder per label")
    parser.add_argument("--model", default=None, help="model folder or Hub repo id (default: the app's model)")
    parser.add_argument("--revision", default=None, help="Hub revision when --model is a repo id")
    parser.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    started = time.time()
    # A model named on the command line must be the one evaluated: no silent fallback to the bundled model.
    try:
        loaded = model_store.load(args.model, args.revision, fallback=args.model is None)
    except Exception as error:  # noqa: BLE001 - report any load failure in one line
        print(f"Cannot load --model {args.model}: it is not a model folder (emotion_cnn.keras + config.json) and "
              f"could not be loaded from the Hub ({type(error).__name__}).", file=sys.stderr)
        return 2
    images, targets = load_folder(args.data)
    classifier = Classifier.from_config(loaded.model, loaded.config)
    metrics = compute_metrics(targets, classifier.predict(images))
    metrics.update(model=loaded.source, data=str(args.data), seconds=round(time.time() - started, 1))
    print(f"model: {loaded.source}\ndata: {args.data}")
    print(format_metrics(metrics))
    print(f"macro F1 {metrics['macro_f1']:.4f}   ({metrics['seconds']} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
