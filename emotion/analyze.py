"""Analyse photos and videos in batch: one CSV for all of them, annotated copies on request.

    python -m emotion.analyze PATH... --out DIR [--annotate] [--rate 10] [--min-face-size 48] [--threshold 0]

PATHs are photos, videos or folders of them (searched recursively). DIR/emotions.csv gets one row per face per
photo or analysed video frame: the columns of `emotion.video.CSV_COLUMNS` after a `file` column; a photo's
`time_s` is empty. A file that cannot be read is skipped with a warning. Boxes are in each file's own pixels.
"""

import argparse
import csv
import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .data import IMAGE_SUFFIXES
from .detect import DEFAULT_MIN_FACE, SMALLEST_FACE
from .images import ImageError, load_image
from .recognizer import EmotionRecognizer, Face
from .tracking import TrackedFace
from .video import (
    CSV_COLUMNS, DEFAULT_RATE, VIDEO_SUFFIXES, Timeline, VideoError, analyze_video, work_min_face, write_rows,
)

CSV_NAME = "emotions.csv"
TINY_SIDE = 48  # pixels: an image whose shorter side is under this holds no face the model could read (48x48 input)
TOO_SMALL = (
    "This image is only {width}x{height} pixels: too small to find a face in. Please use a larger photo, where the "
    f"face is at least {DEFAULT_MIN_FACE} pixels wide."
)


@dataclass
class ImageResult:
    rgb: np.ndarray  # the image as analysed: shrunk to at most emotion.images.MAX_SIDE
    faces: list[Face]  # largest first, boxes in `rgb`'s pixels
    scale: float  # `rgb`'s size over the file's own: divide a box by it to get the file's pixels


def source_scale(source: object, rgb: np.ndarray) -> float:
    """How much `load_image` shrank the image file `source` to give `rgb` (1.0 when it did not, or for non-files).

    The ratio of the long sides, so that it holds whichever way EXIF turned the picture.
    """
    if not isinstance(source, (str, os.PathLike)):
        return 1.0
    try:
        with Image.open(source) as image:
            original = max(image.size)
    except Exception:  # noqa: BLE001 - load_image read it, so this cannot fail in practice; no scaling then
        return 1.0
    return max(rgb.shape[:2]) / original if original else 1.0


def in_source_pixels(face: Face, scale: float) -> Face:
    """`face` with its box divided by `scale` (from the analysed copy's pixels to the file's own)."""
    if scale == 1.0:
        return face
    return replace(face, box=tuple(int(round(v / scale)) for v in face.box))


def analyze_image(
    recognizer: EmotionRecognizer, path: str | os.PathLike, min_face_size: int | None = None, threshold: float = 0.0
) -> ImageResult:
    """Load a photo, then find and classify its faces; `min_face_size` in its own pixels.

    Raises ImageError, with a message for the user, for a file that is unusable, and for one too small to hold a
    face in which none was found ("lower the minimum face size" cannot help there).
    """
    rgb = load_image(path)
    scale = source_scale(path, rgb)
    faces = recognizer.detect(rgb, work_min_face(min_face_size, scale))
    height, width = (round(side / scale) for side in rgb.shape[:2])
    if not faces and min(height, width) < TINY_SIDE:
        raise ImageError(TOO_SMALL.format(width=width, height=height))
    return ImageResult(rgb, [face for face in faces if face.confidence >= threshold], scale)


def collect(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The files to analyse: each file named, and the photos and videos inside each folder (recursively, sorted)."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            suffixes = {*IMAGE_SUFFIXES, *VIDEO_SUFFIXES}
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        else:
            files.append(path)  # a file named on purpose is tried whatever its suffix; a missing one is reported
    return files


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (1 when no file could be analysed)."""
    parser = argparse.ArgumentParser(prog="python -m emotion.analyze", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="photos, videos or folders of them")
    parser.add_argument("--out", required=True, type=Path, help="folder for emotions.csv and annotated copies")
    parser.add_argument("--annotate", action="store_true", help="also write annotated copies of every file")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="video frames analysed per second")
    parser.add_argument("--min-face-size", type=int, default=DEFAULT_MIN_FACE, help="in pixels of each file")
    parser.add_argument("--threshold", type=float, default=0.0, help="leave out faces less confident than this")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.min_face_size < SMALLEST_FACE or not 0 <= args.threshold <= 1:
        parser.error(f"--rate must be > 0, --min-face-size >= {SMALLEST_FACE}, --threshold in [0, 1]")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    files = collect(args.paths)
    if not files:
        parser.error("no photos or videos found in the given paths")

    from tqdm import tqdm  # a dependency of huggingface_hub, so always installed with the app

    args.out.mkdir(parents=True, exist_ok=True)
    recognizer = EmotionRecognizer.load()
    names: set[str] = set()
    done = skipped = 0
    with open(args.out / CSV_NAME, "w", newline="") as file, tqdm(files, unit="file", desc="files") as bar:
        writer = csv.writer(file)
        writer.writerow(["file", *CSV_COLUMNS])
        for path in bar:
            bar.set_postfix_str(path.name[-40:])
            stem = _unique(path.stem, names)
            try:
                timeline = _analyze_file(recognizer, path, args, stem)
            except (ImageError, VideoError) as error:
                tqdm.write(f"warning: skipped {path}: {error}", file=sys.stderr)
                skipped += 1
                continue
            write_rows(writer, timeline.rows, {"file": str(path)})
            file.flush()
            done += 1
            if not timeline.rows:
                tqdm.write(f"{path}: no face found", file=sys.stderr)
    print(f"{done} file(s) analysed, {skipped} skipped: {args.out / CSV_NAME}")
    return 0 if done else 1


def _analyze_file(recognizer: EmotionRecognizer, path: Path, args: argparse.Namespace, stem: str) -> Timeline:
    """One photo or video's rows; an annotated copy in args.out with --annotate."""
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return _analyze_video(recognizer, path, args, stem)
    try:
        result = analyze_image(recognizer, path, args.min_face_size, args.threshold)
    except ImageError:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise
        return _analyze_video(recognizer, path, args, stem)  # no known suffix: perhaps a video
    timeline = Timeline()
    timeline.add(None, 0, [TrackedFace(i, face) for i, face in enumerate(result.faces, start=1)], result.scale)
    if args.annotate:
        annotated = recognizer.annotate(result.rgb, result.faces, min_side=None)
        cv2.imwrite(str(args.out / f"{stem}_annotated.jpg"), cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR))
    return timeline


def _analyze_video(recognizer: EmotionRecognizer, path: Path, args: argparse.Namespace, stem: str) -> Timeline:
    from tqdm import tqdm

    with tqdm(unit="frame", desc=path.name[-30:], leave=False) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total or None
            bar.update(done - bar.n)

        result = analyze_video(
            recognizer, path, args.out / f"{stem}_annotated" if args.annotate else None, rate=args.rate,
            min_face_size=args.min_face_size, threshold=args.threshold, progress=progress,
        )
    if result.note:
        tqdm.write(f"warning: {path}: {result.note}", file=sys.stderr)
    return result.timeline


def _unique(stem: str, names: set[str]) -> str:
    """`stem`, or `stem_2`, `stem_3`, ... if an earlier file had it (annotated copies must not overwrite)."""
    name, number = stem, 1
    while name in names:
        number += 1
        name = f"{stem}_{number}"
    names.add(name)
    return name


if __name__ == "__main__":
    sys.exit(main())
