"""Train the emotion classifier on folder-per-label face crops and write a model folder (optionally to the Hub).

    python train.py --data ../shared/data/fer2013-raw --out runs/default      # the default recipe (VGG trunk)
    python train.py --data ../shared/data/fer2013-raw --arch seed --out runs/seed  # the seed report's CNN, as written
    python train.py --data ... --out runs/default --resume                    # continue after an interruption
    python train.py --data ... --config models/recipe.json                    # rerun a model folder's recipe
    python train.py --data ... --init-from git:3be74fa:models --lr 0.01 --out runs/v2  # a warm restart
    python train.py --data ... --labels mix --ferplus-weight 0.3              # FER2013 labels mixed with FER+ votes

Settings come from the architecture's recipe, then --config (a JSON file; unknown keys are refused), then flags; the
resolved settings are saved as OUT/recipe.json when the run starts. Faces are read in their own pixels and go through
`emotion.preprocess` exactly as the app's faces do (normalised per face), after the capture augmentation (light,
blur, noise, JPEG, low resolution) that makes them look like camera faces. --init-from and --distill-from take a
model folder or `git:REV:PATH`, a model folder as committed, so that a recipe reproduces from a clean clone.

DIR holds train/ plus val/ (or validation/ or test/), or a single folder-per-label tree that is split 80:20,
stratified, with a fixed seed. The output folder holds emotion_cnn.keras, config.json, metrics.json,
confusion_matrix.png, training_curves.png and a README.md model card; checkpoints/ holds what --resume needs.
"""

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import cv2

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from emotion import ferplus
from emotion.bench import machine_info
from emotion.calibration import apply_temperature, fit_temperature
from emotion.classifier import Classifier
from emotion.data import load_dataset, load_faces
from emotion.labels import LABELS
from emotion.metrics import compute_metrics, format_metrics
from emotion.model_card import write_model_card
from emotion.model_store import (BUNDLED_DIR, CONFIG_FILENAME, DEFAULT_REVISION, MODEL_FILENAME, export_onnx,
                                 load_model_dir, push_to_hub)
from emotion.networks import build_model
from emotion.plots import plot_confusion_matrix, plot_training_curves
from emotion.preprocess import INPUT_SIZE, NORMALIZATIONS, FaceInput, preprocess_face
from emotion.recognizer import EmotionRecognizer

# Recipes: every setting of a run. `--arch` picks one, any flag below overrides a single setting.
RECIPES = {
    # The seed report: Adam 1e-3, plain cross-entropy. Light augmentation as in facts.md's reproduction.
    "seed": dict(
        optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="plateau", epochs=25, batch_size=64,
        label_smoothing=0.0, class_weighting=False, augment="light",
    ),
    # The default model: SGD-Nesterov with cosine decay, label smoothing, sqrt-inverse-frequency class weights
    # (disgust has 436 images, happy 7,215) and strong augmentation; see facts.md and issue 5.
    "vgg": dict(
        optimizer="sgd", lr=0.05, weight_decay=5e-4, schedule="cosine", epochs=60, batch_size=64,
        label_smoothing=0.1, class_weighting=True, augment="strong",
    ),
}
MIX_ALPHA = {"mixup": 0.4, "cutmix": 1.0}  # Beta(alpha, alpha) mixing proportions, as in the MixUp and CutMix papers
SEED = 42
# Settings every architecture shares; runs older than a setting count as having used its value here.
COMMON_DEFAULTS = dict(seed=SEED, precision="auto", val_fraction=0.2, init_from=None, average_from=None,
                       mix="none", mix_alpha=None, distill_from=None, distill_weight=0.5, widths=None,
                       labels="fer2013", ferplus_weight=0.5, normalization="equalize", capture=True,
                       select_photos=None)
LABEL_SOURCES = ("fer2013", "ferplus", "mix")

log = logging.getLogger("train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder-per-label data set (train/ + val/, or one folder)")
    p.add_argument("--out", default=None, help="model folder to write (default runs/<arch>)")
    p.add_argument("--arch", choices=sorted(RECIPES), help="architecture and its recipe (default vgg)")
    p.add_argument("--config", help="JSON recipe file, such as a model folder's recipe.json (flags override it)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", choices=["adam", "sgd"])
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=["cosine", "plateau", "constant"])
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--class-weighting", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--augment", choices=["none", "light", "strong", "affine"],
                   help="affine: flip, rotation, zoom and shift in one bilinear resampling, then random erasing")
    p.add_argument("--mix", choices=["none", "mixup", "cutmix"],
                   help="pair each training face with another: blend them (mixup) or paste a box of one (cutmix)")
    p.add_argument("--mix-alpha", type=float, help=f"Beta(alpha, alpha) mixing proportions (default {MIX_ALPHA})")
    p.add_argument("--val-fraction", type=float, help="validation share when DIR is a single folder (default 0.2)")
    p.add_argument("--precision", choices=["auto", "float32", "mixed_bfloat16"], help="default auto")
    p.add_argument("--seed", type=int, help=f"default {SEED}")
    p.add_argument("--widths", type=int, nargs="+", metavar="N",
                   help="filters per stage of the vgg trunk (default 32 64 128 256)")
    p.add_argument("--init-from", help="start from this model folder's (or .keras file's) weights: a warm restart; "
                   "a narrower model of the same architecture is widened without changing what it predicts")
    p.add_argument("--distill-from", metavar="MODEL", nargs="+",
                   help="model folders whose mean prediction (each with its own flip and blur) softens the training labels")
    p.add_argument("--distill-weight", type=float, help="share of the teacher's probabilities in each target (0.5)")
    p.add_argument("--labels", choices=LABEL_SOURCES,
                   help="training targets: FER2013's labels (default), the FER+ vote distribution over the 7 labels, "
                   "or a mix of the two (--ferplus-weight of FER+)")
    p.add_argument("--ferplus-weight", type=float, help="share of the FER+ distribution in a --labels mix (0.5)")
    p.add_argument("--votes", help=f"FER+ votes CSV (default: {ferplus.VOTES_FILENAME} found beside or above --data)")
    p.add_argument("--normalization", choices=NORMALIZATIONS,
                   help="per-face photometric normalisation, in training and in the app (default equalize)")
    p.add_argument("--capture", action=argparse.BooleanOptionalAction, default=None,
                   help="capture augmentation: brightness, contrast, gamma, low light, blur, noise, JPEG, low resolution")
    p.add_argument("--select-photos", metavar="DIR",
                   help="folder-per-label photos (such as sfew-train) scored end to end each epoch: the checkpoint kept "
                   "is the best by the mean of validation accuracy and the photos' balanced accuracy")
    p.add_argument("--average-from", type=int, metavar="EPOCH",
                   help="stochastic weight averaging: average the weights of every epoch from EPOCH on")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.keras "
                   "(with a constant or plateau schedule, --epochs may change: to extend the run or end it early)")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the model folder (token from $HF_TOKEN)")
    p.add_argument("--hub-tag", default=DEFAULT_REVISION, help="tag the uploaded commit (the app pins this revision)")
    return p.parse_args(argv)


def resolve_recipe(args: argparse.Namespace) -> dict:
    """Every setting of the run: the architecture's recipe, then --config, then explicit flags."""
    overrides = {}
    if args.config:
        try:
            overrides = json.loads(Path(args.config).read_text())
        except (OSError, ValueError) as error:
            raise SystemExit(f"cannot read --config {args.config}: {error}") from None
        if not isinstance(overrides, dict):
            raise SystemExit(f"--config {args.config} must hold a JSON object of settings")
    arch = args.arch or overrides.get("arch", "vgg")
    if arch not in RECIPES:
        raise SystemExit(f"unknown arch {arch!r} in {args.config}; choose one of {sorted(RECIPES)}")
    recipe = dict(RECIPES[arch], arch=arch, **COMMON_DEFAULTS)
    unknown = set(overrides) - set(recipe)
    if unknown:
        raise SystemExit(f"unknown settings in {args.config}: {sorted(unknown)}")
    recipe.update({key: value for key, value in overrides.items() if key != "arch"})
    for key in recipe:
        value = getattr(args, key, None)
        if value is not None and key != "arch":
            recipe[key] = value
    if args.mix is not None and args.mix_alpha is None:
        recipe["mix_alpha"] = None  # a mix named on the command line starts from its own alpha, not --config's
    if recipe["mix"] == "none":
        recipe["mix_alpha"] = None
    elif recipe["mix_alpha"] is None:
        recipe["mix_alpha"] = MIX_ALPHA[recipe["mix"]]
    elif recipe["mix_alpha"] <= 0:
        raise SystemExit(f"--mix-alpha must be positive, got {recipe['mix_alpha']}")
    if isinstance(recipe["distill_from"], str):  # a hand-written --config may name one teacher as a string
        recipe["distill_from"] = [recipe["distill_from"]]
    if recipe["widths"] is not None:
        if not isinstance(recipe["widths"], list) or not all(isinstance(w, int) for w in recipe["widths"]):
            raise SystemExit(f"widths must be a list of filter counts, got {recipe['widths']!r}")
        if arch != "vgg":
            raise SystemExit(f"--widths applies to --arch vgg only, not {arch}")
        if not 1 <= len(recipe["widths"]) <= 5 or min(recipe["widths"]) < 1:
            raise SystemExit(f"--widths takes 1 to 5 positive filter counts (48 px pools to 1 px), got {recipe['widths']}")
    if not 0 <= recipe["distill_weight"] <= 1:
        raise SystemExit(f"--distill-weight must be between 0 and 1, got {recipe['distill_weight']}")
    if recipe["labels"] not in LABEL_SOURCES:
        raise SystemExit(f"labels must be one of {LABEL_SOURCES}, got {recipe['labels']!r}")
    if not 0 <= recipe["ferplus_weight"] <= 1:
        raise SystemExit(f"--ferplus-weight must be between 0 and 1, got {recipe['ferplus_weight']}")
    if recipe["normalization"] not in NORMALIZATIONS:
        raise SystemExit(f"normalization must be one of {NORMALIZATIONS}, got {recipe['normalization']!r}")
    for key in ("epochs", "batch_size"):
        if not isinstance(recipe[key], int) or recipe[key] < 1:
            raise SystemExit(f"{key} must be a positive whole number, got {recipe[key]!r}")
    if not recipe["lr"] > 0:
        raise SystemExit(f"--lr must be positive, got {recipe['lr']}")
    for key in ("init_from", *(["distill_from"] if recipe["distill_from"] else [])):
        for ref in recipe[key] if isinstance(recipe[key], list) else [recipe[key]]:
            if ref and not str(ref).startswith("git:") and Path(ref).resolve().is_relative_to(BUNDLED_DIR.resolve()):
                raise SystemExit(f"{key} {ref!r} is the bundled model folder, whose content changes with every new "
                                 "default: name the copy as committed instead, git:<commit>:models")
    return recipe


def model_folder(ref: str) -> Path:
    """The model folder (or .keras file) `ref` names: a path, or `git:REV:PATH`, a model folder as committed at REV,
    written out once under runs/git-models/ (so that a recipe reproduces from a clean clone)."""
    if not ref.startswith("git:"):
        return Path(ref)
    try:
        _, rev, path = ref.split(":", 2)
    except ValueError:
        raise SystemExit(f"{ref!r}: a git model reference is git:REV:PATH, such as git:3be74fa:models") from None
    folder = Path("runs/git-models") / f"{rev}-{path.strip('/').replace('/', '_')}"
    if not (folder / MODEL_FILENAME).exists():
        folder.mkdir(parents=True, exist_ok=True)
        for name in (CONFIG_FILENAME, MODEL_FILENAME):  # the model last: its presence marks a complete folder
            blob = subprocess.run(["git", "show", f"{rev}:{path.strip('/')}/{name}"], capture_output=True)
            if blob.returncode:
                raise SystemExit(f"{ref!r}: git has no {path}/{name} at {rev} ({blob.stderr.decode().strip()})")
            (folder / name).write_bytes(blob.stdout)
    return folder


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_precision(requested: str) -> str:
    if requested != "auto":
        return requested
    # bfloat16 halves training time on CPUs with native BF16 (facts.md) and is the norm on GPUs.
    return "mixed_bfloat16" if tf.config.list_physical_devices("GPU") or cpu_has_bf16() else "float32"


def augmentation(kind: str) -> keras.Sequential | None:
    """Training-only augmentation layers (none / light / strong); "affine" is `affine_augment`, not layers."""
    if kind in ("none", "affine"):
        return None
    steps = [layers.RandomFlip("horizontal"), layers.RandomTranslation(0.1, 0.1, fill_mode="nearest")]
    if kind == "light":
        steps.append(layers.RandomRotation(10 / 360, fill_mode="nearest"))
    else:
        steps += [
            layers.RandomRotation(10 / 360, fill_mode="nearest"),
            layers.RandomZoom((-0.2, 0.2), fill_mode="nearest"),  # random resized crops, scale 0.8-1.2
            layers.RandomErasing(factor=0.5, scale=(0.02, 0.15), fill_value=0.5),
        ]
    return keras.Sequential(steps, name=f"augment_{kind}")


def affine_augment(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """The strong augmentation in a single bilinear resampling: a random flip, rotation (+-10 degrees), zoom (0.8-1.2)
    and shift (+-10 %) composed into one affine warp per face, then random erasing (half the faces, about 2-16 % of
    the area, filled with grey). The "strong" layers resample a face three times, each softening it; the model then reads
    sharp faces worse than the ones it learned on. `seed` (2 integers) fixes every draw."""
    n, size = tf.shape(x)[0], tf.shape(x)[1]
    side = tf.cast(size, tf.float32)
    s = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 8)
    uniform = lambda i, shape, low, high: tf.random.stateless_uniform(shape, s[i], low, high)  # noqa: E731
    flip = tf.where(uniform(0, [n], 0.0, 1.0) < 0.5, -1.0, 1.0)
    angle = uniform(1, [n], -10.0, 10.0) * (np.pi / 180)
    scale = uniform(2, [n], 0.8, 1.2)
    shift = uniform(3, [n, 2], -0.1, 0.1) * side
    # Output pixel p comes from input c + F R(-angle) (p - c - shift) / scale, F the flip, c the centre.
    cos, sin = tf.cos(angle), tf.sin(angle)
    a0, a1, b0, b1 = flip * cos / scale, flip * sin / scale, -sin / scale, cos / scale
    c = (side - 1) / 2
    ox, oy = c + shift[:, 0], c + shift[:, 1]
    zero = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, c - a0 * ox - a1 * oy, b0, b1, c - b0 * ox - b1 * oy, zero, zero], axis=1)
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(x, tf.float32), transforms=transforms, output_shape=tf.stack([size, size]),
        fill_value=0.0, interpolation="BILINEAR", fill_mode="NEAREST")
    area = uniform(4, [n], 0.02, 0.15)
    aspect = tf.exp(uniform(5, [n], np.log(0.3), np.log(3.3)))
    height, width = tf.sqrt(area * aspect) * side, tf.sqrt(area / aspect) * side
    corner = uniform(6, [n, 2], 0.0, 1.0) * (side - tf.stack([height, width], axis=1))
    rows = tf.range(side)[None, :]
    inside_rows = (rows >= corner[:, :1]) & (rows < corner[:, :1] + height[:, None])
    inside_cols = (rows >= corner[:, 1:]) & (rows < corner[:, 1:] + width[:, None])
    erase = (inside_rows[:, :, None] & inside_cols[:, None, :]) & (uniform(7, [n], 0.0, 1.0) < 0.5)[:, None, None]
    return tf.where(erase[..., None], 0.5, x)


def capture_augment(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 48x48 uint8 face as a camera might have given it: light (brightness, contrast, gamma or low light), then
    resolution (down to 16-24 px and back), optics (blur), sensor noise and JPEG compression (quality 20-90), each
    drawn at random. Per-face normalisation undoes most of the light, but not the clipping, quantisation and noise
    that come with it, and nothing else here."""
    x = face.astype(np.float32)
    kind = rng.integers(4)  # 0: none, 1: brightness and contrast, 2: gamma, 3: low light
    if kind == 1:
        x = (x - 128) * rng.uniform(0.5, 1.5) + 128 + rng.uniform(-50, 50)
    elif kind == 2:
        x = 255 * (np.clip(x, 0, 255) / 255) ** rng.uniform(0.5, 2.0)
    elif kind == 3:
        x = x * rng.uniform(0.1, 0.4) + rng.normal(0, rng.uniform(1, 4), x.shape)
    x = np.clip(x, 0, 255).round().astype(np.uint8)
    if rng.random() < 0.25:
        side = int(rng.integers(16, 25))
        x = cv2.resize(cv2.resize(x, (side, side), interpolation=cv2.INTER_AREA), (INPUT_SIZE, INPUT_SIZE),
                       interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.25:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.4, 1.2))
    if rng.random() < 0.25:
        x = np.clip(x + rng.normal(0, rng.uniform(2, 8), x.shape), 0, 255).round().astype(np.uint8)
    if rng.random() < 0.35:
        _, jpeg = cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(20, 91))])
        x = cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE)
    return x


def model_inputs(faces: np.ndarray, normalization: str, seed: np.ndarray | None = None) -> np.ndarray:
    """(N, 48, 48, 1) uint8 faces in their own pixels -> float32 model inputs through `emotion.preprocess` (as in the
    app), after `capture_augment` when a seed (2 integers) is given."""
    rng = None if seed is None else np.random.default_rng([int(v) & 0xFFFFFFFF for v in seed])
    out = [preprocess_face(capture_augment(f[..., 0], rng) if rng else f[..., 0], normalization) for f in faces]
    return np.stack(out) if out else np.zeros((0, INPUT_SIZE, INPUT_SIZE, 1), np.float32)


def training_targets(y: np.ndarray, paths: list, recipe: dict, votes_path: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Targets (N, 7) for the training faces and a mask (N,) of the faces to train on. FER2013 labels are one-hot;
    FER+ targets are the annotators' vote distributions over the 7 labels (faces with no vote left there skipped); a
    mix is (1 - w) FER2013 label + w FER+ distribution, the label alone where FER+ has no vote."""
    onehot = np.eye(len(LABELS), dtype=np.float32)[y]
    if recipe["labels"] == "fer2013":
        return onehot, np.ones(len(y), bool)
    if votes_path is None or not Path(votes_path).is_file():
        raise SystemExit(f"--labels {recipe['labels']} needs the FER+ votes ({ferplus.VOTES_FILENAME}): none found "
                         "beside the data; give the file with --votes")
    dist, has_votes = ferplus.distributions(ferplus.votes_for(paths, ferplus.read_votes(votes_path)))
    log.info("FER+ votes for %d of %d training faces", has_votes.sum(), len(y))
    if recipe["labels"] == "ferplus":
        return dist, has_votes
    w = recipe["ferplus_weight"]
    return np.where(has_votes[:, None], (1 - w) * onehot + w * dist, onehot).astype(np.float32), np.ones(len(y), bool)


def class_weights(targets: np.ndarray) -> np.ndarray:
    """Per-class weights proportional to 1/sqrt(frequency), frequencies counted in target shares (one-hot labels
    count whole faces), normalised to a mean sample weight of 1. Returns the (7,) class weights."""
    targets = np.eye(len(LABELS))[targets] if targets.ndim == 1 else np.asarray(targets, np.float64)
    counts = targets.sum(axis=0)
    weights = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1e-12)), 0.0)
    return weights / (targets @ weights).mean()


def mix_batch(x: tf.Tensor, y: tf.Tensor, w: tf.Tensor, kind: str, alpha: float, seed: tf.Tensor):
    """Pair every face of a batch with another of the same batch: MixUp blends the two (a share per face), CutMix
    pastes a box of the partner into the face (one box per batch, its area the partner's share). The loss then counts
    each face's label with its class weight in the share its face has: the target is the class-weighted mix of the
    two labels, normalised, and the sample weight the mix of the two weights. `seed` (2 integers) fixes every draw."""
    n = tf.shape(x)[0]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    partner = tf.argsort(tf.random.stateless_uniform([n], seeds[0]))
    shape = [n] if kind == "mixup" else []
    a, b = tf.random.stateless_gamma(shape, seeds[1], alpha), tf.random.stateless_gamma(shape, seeds[2], alpha)
    lam = a / (a + b)  # Beta(alpha, alpha)
    images = tf.cast(x, tf.float32)  # augmentation layers hand over bfloat16 under mixed precision
    if kind == "mixup":
        images = lam[:, None, None, None] * images + (1 - lam[:, None, None, None]) * tf.gather(images, partner)
    else:
        side = tf.shape(x)[1]
        cut = tf.cast(tf.round(tf.cast(side, tf.float32) * tf.sqrt(1 - lam)), tf.int32)
        low = tf.random.stateless_uniform([2], seeds[3], 0, side, dtype=tf.int32) - cut // 2
        high = tf.minimum(low + cut, side)
        low = tf.maximum(low, 0)
        inside = [(tf.range(side) >= low[i]) & (tf.range(side) < high[i]) for i in (0, 1)]
        box = inside[0][:, None] & inside[1][None, :]
        images = tf.where(box[None, :, :, None], tf.gather(images, partner), images)
        lam = tf.fill([n], 1 - tf.reduce_mean(tf.cast(box, tf.float32)))  # the box as clipped to the face
    own, other = lam * w, (1 - lam) * tf.gather(w, partner)
    weight = own + other
    target = (own[:, None] * y + other[:, None] * tf.gather(y, partner)) / tf.maximum(weight, 1e-12)[:, None]
    return tf.cast(images, x.dtype), target, weight


def map_with_seeds(batches: tf.data.Dataset, seed: int, fn) -> tf.data.Dataset:
    """Map fn(x, y, w, seed) over (x, y, w) batches, `seed` a pair of integers per batch: new draws every epoch, the
    same run after run (stateful random ops in a map would repeat every epoch)."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(batches, seeds).map(lambda batch, s: fn(*batch, s), num_parallel_calls=tf.data.AUTOTUNE)


def make_datasets(x_train: np.ndarray, targets: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, recipe: dict,
                  teacher: np.ndarray | None = None) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Batched training (faces, targets, sample weights) and validation (faces, one-hot) data. `x_train` are uint8
    faces in their own pixels (N, 48, 48), made model inputs batch by batch (`model_inputs`, with the capture
    augmentation if the recipe has it); `x_val` are model inputs already. `teacher`, the teacher's probabilities for
    each training face, takes `distill_weight` of every target."""
    weights = class_weights(targets) if recipe["class_weighting"] else np.ones(len(LABELS))
    if teacher is not None:
        targets = (1 - recipe["distill_weight"]) * targets + recipe["distill_weight"] * teacher.astype(np.float32)
    train_ds = tf.data.Dataset.from_tensor_slices(
        (x_train[..., None], targets.astype(np.float32), (targets @ weights).astype(np.float32))
    ).shuffle(len(x_train), seed=recipe["seed"], reshuffle_each_iteration=True)
    train_ds = train_ds.batch(recipe["batch_size"], drop_remainder=len(x_train) >= recipe["batch_size"])
    normalization, capture = recipe["normalization"], recipe["capture"]

    def inputs(x, y, w, seed):
        faces = tf.numpy_function(lambda f, s: model_inputs(f, normalization, s if capture else None),
                                  [x, seed], tf.float32, stateful=False)
        return tf.ensure_shape(faces, [None, INPUT_SIZE, INPUT_SIZE, 1]), y, w

    train_ds = map_with_seeds(train_ds, recipe["seed"] + 2, inputs)
    augment = augmentation(recipe["augment"])
    if augment is not None:
        train_ds = train_ds.map(lambda x, y, w: (augment(x, training=True), y, w), num_parallel_calls=tf.data.AUTOTUNE)
    elif recipe["augment"] == "affine":
        train_ds = map_with_seeds(train_ds, recipe["seed"] + 1, lambda x, y, w, seed: (affine_augment(x, seed), y, w))
    val_ds = tf.data.Dataset.from_tensor_slices((x_val, np.eye(len(LABELS), dtype=np.float32)[y_val])).batch(256)
    return train_ds.prefetch(tf.data.AUTOTUNE), val_ds.prefetch(tf.data.AUTOTUNE)


def with_mixing(train_ds: tf.data.Dataset, recipe: dict) -> tf.data.Dataset:
    """The training batches MixUp or CutMix pairs up (recipe["mix"]); unchanged for "none"."""
    if recipe["mix"] == "none":
        return train_ds
    kind, alpha = recipe["mix"], recipe["mix_alpha"]
    return map_with_seeds(train_ds, recipe["seed"], lambda x, y, w, seed: mix_batch(x, y, w, kind, alpha, seed))


def make_optimizer(recipe: dict, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    lr = recipe["lr"]
    if recipe["schedule"] == "cosine":
        total = steps_per_epoch * recipe["epochs"]
        warmup = min(steps_per_epoch, total // 10)  # 1) one epoch of linear warm-up, 2) cosine to zero
        lr = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=total - warmup, warmup_target=recipe["lr"], warmup_steps=warmup
        )
    if recipe["optimizer"] == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, weight_decay=recipe["weight_decay"] or None)
    return keras.optimizers.Adam(lr, weight_decay=recipe["weight_decay"] or None)


class Checkpoints(keras.callbacks.Callback):
    """Each epoch: save last.keras + state.json (for --resume) and best.keras when the selection score improves: the
    validation accuracy, or with `photos` (a `PhotoSet`) the mean of it and the photos' balanced accuracy."""

    def __init__(self, folder: Path, state: dict, photos: "PhotoSet | None" = None):
        super().__init__()
        self.folder, self.state, self.photos = folder, state, photos
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        logs["selection_score"] = logs.get("val_accuracy", -1)
        if self.photos is not None:
            logs["photos_balanced_accuracy"] = self.photos.balanced_accuracy(self.model)
            logs["selection_score"] = (logs["val_accuracy"] + logs["photos_balanced_accuracy"]) / 2
        for key, value in logs.items():
            self.state["history"].setdefault(key, []).append(float(value))
        self.state["epoch"] = epoch + 1
        self.state["seconds"] += time.time() - self.started
        self.started = time.time()
        if logs["selection_score"] > self.state.get("best_score", self.state["best_val_accuracy"]):
            self.state["best_score"] = float(logs["selection_score"])
            self.state["best_val_accuracy"] = float(logs["val_accuracy"])
            self.state["best_epoch"] = epoch + 1
            self.model.save(self.folder / "best.keras")
        self.model.save(self.folder / "last.keras")
        (self.folder / "state.json").write_text(json.dumps(self.state, indent=1))
        log.info(
            "epoch %d: val_accuracy %.4f, photos balanced accuracy %.4f, score %.4f (best %.4f at epoch %d), %.0f s so far",
            epoch + 1, logs.get("val_accuracy", float("nan")), logs.get("photos_balanced_accuracy", float("nan")),
            logs["selection_score"], self.state.get("best_score", -1), self.state["best_epoch"], self.state["seconds"],
        )


class PhotoSet:
    """Folder-per-label photos scored end to end for checkpoint selection: faces found once as the app finds them
    (`EmotionRecognizer.find_faces`: the largest face, or the whole photo when it is itself a face crop; a photo with
    neither counts as wrong), framed and normalised as the app does, classified each epoch without test-time
    augmentation."""

    def __init__(self, folder: str, face_input: FaceInput):
        self.folder = folder
        _, self.y, paths = load_faces(folder)
        finder = EmotionRecognizer(classifier=None)  # finding faces needs no classifier
        self.faces, found = [], []  # (rgb, boxes, whole_image) of each photo with a face
        for path in paths:
            rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            boxes, whole_image = finder.find_faces(rgb)
            found.append(bool(boxes))
            if boxes:
                self.faces.append((rgb, boxes[:1], whole_image))
        self.found = np.asarray(found)
        self.use(face_input)
        log.info("selection photos %s: a face found in %d of %d", folder, len(self.faces), len(self.y))

    def use(self, face_input: FaceInput) -> None:
        """Frame and normalise the faces with these settings from now on."""
        self.face_input = face_input
        self.inputs = np.concatenate([face_input.whole(rgb) if whole else face_input(rgb, boxes)
                                      for rgb, boxes, whole in self.faces])

    def probabilities(self, predict) -> np.ndarray:
        probs = np.zeros((len(self.y), len(LABELS)), np.float32)
        probs[self.found] = predict(self.inputs)
        return probs

    def balanced_accuracy(self, model: keras.Model) -> float:
        probs = self.probabilities(lambda x: model.predict(x, batch_size=256, verbose=0))
        return compute_metrics(self.y, probs)["balanced_accuracy"]


FRAMING_SCALES = (1.0, 1.12, 1.24, 1.4)
FRAMING_SHIFTS = (0.0, 0.09)


def choose_framing(classifier: Classifier, photos: PhotoSet) -> FaceInput:
    """The framing of detector boxes (crop scale and upward shift) under which `classifier` reads the photos best, by
    balanced accuracy (face crops from FER2013 have their own framing; this is how photos are cut to match it)."""
    scores = {}
    for scale in FRAMING_SCALES:
        for shift in FRAMING_SHIFTS:
            photos.use(FaceInput(photos.face_input.normalization, scale, shift))
            probs = photos.probabilities(classifier.predict)
            scores[(scale, shift)] = compute_metrics(photos.y, probs)["balanced_accuracy"]
            log.info("framing scale %.2f, shift up %.2f: photos balanced accuracy %.4f", scale, shift, scores[(scale, shift)])
    scale, shift = max(scores, key=scores.get)
    photos.use(FaceInput(photos.face_input.normalization, scale, shift))
    return photos.face_input


def development_results(classifier: Classifier, x_val: np.ndarray, y_val: np.ndarray, val_majority: np.ndarray | None,
                        photos: PhotoSet | None, data: str) -> list[dict]:
    """The final model, as the app runs it, on each development set: rows for the model card and config.json."""
    def row(name, labels, y, probs):
        m = compute_metrics(y, probs)
        recalls = {label: m["per_class"][label]["recall"] for label in LABELS if m["per_class"][label]["support"]}
        return {"set": name, "labels": labels, "samples": m["samples"], "accuracy": m["accuracy"],
                "balanced_accuracy": m["balanced_accuracy"], "macro_f1": m["macro_f1"], "recall": recalls}

    probs = classifier.predict(x_val)
    rows = [row(f"{data} validation faces", "FER2013", y_val, probs)]
    if val_majority is not None and (val_majority >= 0).any():  # FER+ votes for some validation faces
        scored = val_majority >= 0
        rows.append(row(f"{data} validation faces", "FER+ majority", val_majority[scored], probs[scored]))
    if photos is not None:
        rows.append(row(f"{photos.folder} photos, end to end", "folders", photos.y, photos.probabilities(classifier.predict)))
    return rows


class WeightAverage(keras.callbacks.Callback):
    """Stochastic weight averaging: a running mean of the trainable weights at the end of each epoch from `start`
    (1-based) on, kept in checkpoints/average.npz so that --resume continues it. Runs before `Checkpoints`."""

    def __init__(self, start: int, folder: Path, state: dict):
        super().__init__()
        self.start, self.path, self.state = start, folder / "average.npz", state

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 < self.start:
            return
        weights = [v.numpy().astype(np.float32) for v in self.model.trainable_variables]
        count = self.state.get("averaged_epochs", 0)
        if count:
            average = load_average(self.path)
            weights = [a + (w - a) / (count + 1) for a, w in zip(average, weights)]
        np.savez(self.path, *weights)
        self.state["averaged_epochs"] = count + 1


def load_average(path: Path) -> list[np.ndarray]:
    with np.load(path) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def averaged_model(ckpt: Path, train_ds: tf.data.Dataset) -> keras.Model:
    """The last checkpoint with the averaged weights, and BatchNorm statistics recomputed for them: one pass over the
    (augmented) training data in training mode, as averaged weights make the stored statistics stale."""
    model = keras.saving.load_model(ckpt / "last.keras", safe_mode=True)
    for variable, value in zip(model.trainable_variables, load_average(ckpt / "average.npz")):
        variable.assign(value)
    update_statistics = tf.function(lambda x: model(x, training=True))
    for x, _, _ in train_ds:
        update_statistics(x)
    return model


BLUR_SIGMAS = (0.0, 0.5, 0.75)


def accuracy(y: np.ndarray, probs: np.ndarray) -> float:
    return float((probs.argmax(1) == y).mean())


def choose_inference(model: keras.Model, x_val: np.ndarray, y_val: np.ndarray,
                     photos: PhotoSet | None = None) -> tuple[str, float, np.ndarray, np.ndarray]:
    """Pick the test-time flip and input blur (`Classifier`) that score best on validation (with `photos`, on the mean
    of validation accuracy and the photos' balanced accuracy); return them with that setting's validation
    probabilities and the plain ones (no flip, no blur)."""
    tried, scores = {}, {}
    for tta in ("none", "flip"):
        for sigma in BLUR_SIGMAS:
            classifier = Classifier(model, tta=tta, blur_sigma=sigma)
            tried[(tta, sigma)] = classifier.predict(x_val)
            scores[(tta, sigma)] = accuracy(y_val, tried[(tta, sigma)])
            if photos is not None:
                balanced = compute_metrics(photos.y, photos.probabilities(classifier.predict))["balanced_accuracy"]
                scores[(tta, sigma)] = (scores[(tta, sigma)] + balanced) / 2
            log.info("inference tta %s, blur %.2f: score %.4f", tta, sigma, scores[(tta, sigma)])
    # Ties go to the cheaper setting: no flip before flip, less blur before more (the order tried is built in).
    tta, sigma = max(tried, key=lambda key: scores[key])
    return tta, sigma, tried[(tta, sigma)], tried[("none", 0.0)]


def heldout_calibrated_ece(y: np.ndarray, probs: np.ndarray) -> float:
    """ECE after temperature scaling, measured honestly: fit on one half of the data, measure on the other, both ways."""
    calibrated = np.empty_like(probs)
    first = np.arange(len(y)) % 2 == 0
    for fit in (first, ~first):
        calibrated[~fit] = apply_temperature(probs[~fit], fit_temperature(y[fit], probs[fit]))
    return compute_metrics(y, calibrated)["ece"]


def to_float32(model: keras.Model, recipe: dict) -> keras.Model:
    """Rebuild `model` under the float32 policy with the same weights: bfloat16 only pays off for training."""
    keras.mixed_precision.set_global_policy("float32")
    clean = build_model(recipe["arch"], widths=recipe["widths"])
    clean.set_weights(model.get_weights())
    return clean


def teacher_probabilities(ref: str, faces: np.ndarray) -> np.ndarray:
    """A model folder's probabilities for uint8 `faces` (N, 48, 48), read as the app reads faces (its preprocessing,
    flip and blur; no temperature)."""
    folder = model_folder(ref)
    teacher, config = load_model_dir(folder)
    started = time.time()
    inputs = model_inputs(faces[..., None], FaceInput.from_config(config).normalization)
    probs = Classifier.from_config(teacher, {**config, "temperature": 1.0}).predict(inputs)
    log.info("teacher %s: probabilities for %d training faces in %.0f s", folder, len(faces), time.time() - started)
    return probs


def widen_into(source: keras.Model, model: keras.Model) -> None:
    """Copy `source`'s weights into `model`, built by `build_model` for the same architecture with as many or more
    filters per layer, so that `model` predicts exactly what `source` does (in inference). Each weight goes into the
    leading slice; the extra filters keep their random initialisation, and the weights that read them in the next
    layer start at zero. (Exact for the vgg trunk, whose global average pooling keeps channels apart.)"""
    layers = list(zip(source.layers, model.layers))
    if len(source.layers) != len(model.layers) or any(
        type(a) is not type(b) or [v.name for v in a.weights] != [v.name for v in b.weights] for a, b in layers
    ):
        raise ValueError(f"{source.name} and {model.name} have different layers: cannot widen one into the other")
    if source.output_shape != model.output_shape:
        raise ValueError(f"outputs differ ({source.output_shape} and {model.output_shape}): cannot widen")
    pairs = [(old, new) for a, b in layers for old, new in zip(a.weights, b.weights)]
    for old, new in pairs:  # check every shape before changing anything
        same = old.shape[:-2] if len(old.shape) >= 2 else ()  # a kernel's spatial size must not change
        if len(old.shape) != len(new.shape) or same != new.shape[:len(same)] or any(
                o > n for o, n in zip(old.shape, new.shape)):
            raise ValueError(f"{new.path}: {old.shape} does not fit into {new.shape}")
    for old_var, new_var in pairs:
        old, new = old_var.numpy(), new_var.numpy()
        if new.ndim >= 2:  # a kernel (..., inputs, outputs): new inputs must not change the old outputs
            new[..., old.shape[-2]:, :] = 0
        new[tuple(slice(0, size) for size in old.shape)] = old
        new_var.assign(new)


def init_model_path(init_from: str) -> Path:
    """The .keras file that --init-from names: the file itself, or a model folder's emotion_cnn.keras."""
    path = model_folder(init_from)
    return path / MODEL_FILENAME if path.is_dir() else path


def init_training(init_from: str | None) -> dict | None:
    """The training section of the warm-start model's config.json, so the card tells the whole lineage."""
    if not init_from:
        return None
    config = init_model_path(init_from).parent / CONFIG_FILENAME
    return json.loads(config.read_text()).get("training") if config.exists() else None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    args = parse_args(argv)
    recipe = resolve_recipe(args)
    out = Path(args.out or f"runs/{recipe['arch']}")
    ckpt = out / "checkpoints"
    state_path = ckpt / "state.json"
    if state_path.exists() and not args.resume:
        log.error("%s already holds a training run: add --resume to continue it, or choose another --out.", out)
        return 2
    ckpt.mkdir(parents=True, exist_ok=True)

    keras.utils.set_random_seed(recipe["seed"])
    precision = choose_precision(recipe["precision"])
    keras.mixed_precision.set_global_policy(precision)
    gpus = tf.config.list_physical_devices("GPU")
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    log.info("recipe %s; precision %s; %d GPU(s)", json.dumps(recipe), precision, len(gpus))

    (out / "recipe.json").write_text(json.dumps(recipe, indent=2))  # the resolved settings, saved with the run
    started = time.time()
    (x_train, y_train, train_paths), (val_faces, y_val, val_paths) = load_dataset(args.data, recipe["val_fraction"],
                                                                                 recipe["seed"])
    log.info("loaded %d training and %d validation images in %.1f s", len(x_train), len(val_faces), time.time() - started)
    votes_path = Path(args.votes) if args.votes else ferplus.find_votes(args.data)
    targets, keep = training_targets(y_train, train_paths, recipe, votes_path)
    x_train, targets = x_train[keep], targets[keep]
    x_val = model_inputs(val_faces[..., None], recipe["normalization"])
    teacher = None
    if recipe["distill_from"]:
        teacher = np.mean([teacher_probabilities(ref, x_train) for ref in recipe["distill_from"]], axis=0)
    train_ds, val_ds = make_datasets(x_train, targets, x_val, y_val, recipe, teacher)
    steps_per_epoch = int(train_ds.cardinality())
    face_input = FaceInput(recipe["normalization"])
    photos = PhotoSet(recipe["select_photos"], face_input) if recipe["select_photos"] else None

    resuming = args.resume and state_path.exists() and (ckpt / "last.keras").exists()
    with strategy.scope():
        if resuming:
            state = json.loads(state_path.read_text())
            # Settings newer than the checkpoint (absent from its state) count as their defaults.
            saved = {**COMMON_DEFAULTS, **state["recipe"]}
            # With a constant or plateau schedule --epochs may change, to extend a run or end it early; a cosine
            # schedule is saved with the optimizer for its original length.
            free = {"epochs"} if recipe["schedule"] != "cosine" else set()
            changed = {k: (saved.get(k), v) for k, v in recipe.items() if saved.get(k, v) != v and k not in free}
            if changed:
                raise SystemExit(f"--resume needs the interrupted run's recipe; these differ (was, now): {changed}")
            if recipe["epochs"] < state["epoch"]:
                raise SystemExit(f"--epochs {recipe['epochs']} is below the {state['epoch']} epochs already run")
            model = keras.saving.load_model(ckpt / "last.keras", safe_mode=True)
            log.info("resuming after epoch %d", state["epoch"])
        else:
            state = {"recipe": recipe, "epoch": 0, "best_val_accuracy": -1.0, "best_epoch": 0, "seconds": 0.0, "history": {}}
            model = build_model(recipe["arch"], widths=recipe["widths"])
            if recipe["init_from"]:
                source = keras.saving.load_model(init_model_path(recipe["init_from"]), safe_mode=True, compile=False)
                widen_into(source, model)  # fails loudly if the architectures differ
                log.info("starting from the weights of %s", recipe["init_from"])
            model.compile(
                optimizer=make_optimizer(recipe, steps_per_epoch),
                loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe["label_smoothing"]),
                metrics=["accuracy"],
            )
    callbacks = [Checkpoints(ckpt, state, photos)]
    if recipe["average_from"]:
        callbacks.insert(0, WeightAverage(recipe["average_from"], ckpt, state))
    if recipe["schedule"] == "plateau":
        callbacks.insert(0, keras.callbacks.ReduceLROnPlateau("val_accuracy", factor=0.5, patience=3, mode="max"))
    if state["epoch"] < recipe["epochs"]:
        model.fit(
            with_mixing(train_ds, recipe), validation_data=val_ds, epochs=recipe["epochs"], initial_epoch=state["epoch"],
            callbacks=callbacks, verbose=2, shuffle=False,  # train_ds shuffles itself, seeded
        )

    best = to_float32(keras.saving.load_model(ckpt / "best.keras", safe_mode=True), recipe)
    averaging = None
    if state.get("averaged_epochs"):
        # Selection on validation only: the averaged weights replace the best checkpoint if they do better.
        # BatchNorm statistics come from unmixed faces, the kind the model sees in use.
        averaged = to_float32(averaged_model(ckpt, train_ds), recipe)
        scores = [accuracy(y_val, Classifier(m).predict(x_val)) for m in (averaged, best)]
        averaging = {"epochs": state["averaged_epochs"], "from_epoch": recipe["average_from"],
                     "val_accuracy": scores[0], "best_checkpoint_val_accuracy": scores[1], "used": scores[0] >= scores[1]}
        log.info("weight average of %d epochs: val accuracy %.4f (best checkpoint %.4f)", averaging["epochs"], *scores)
        if averaging["used"]:
            best = averaged
    tta, blur_sigma, raw, plain = choose_inference(best, x_val, y_val, photos)
    temperature = fit_temperature(y_val, raw)
    final = Classifier(best, tta=tta, blur_sigma=blur_sigma, temperature=temperature)
    if photos is not None:
        face_input = choose_framing(final, photos)
    val_majority = None
    if votes_path is not None and Path(votes_path).is_file():
        val_majority = ferplus.majority(ferplus.votes_for(val_paths, ferplus.read_votes(votes_path)))
    results = development_results(final, x_val, y_val, val_majority, photos, str(args.data))
    for result in results:
        log.info("%s by %s labels: accuracy %.4f, balanced accuracy %.4f, macro F1 %.4f", result["set"],
                 result["labels"], result["accuracy"], result["balanced_accuracy"], result["macro_f1"])
    metrics = compute_metrics(y_val, apply_temperature(raw, temperature))
    metrics["ece_before_calibration"] = compute_metrics(y_val, raw)["ece"]
    metrics["ece_after_calibration_heldout"] = heldout_calibrated_ece(y_val, raw)
    metrics["accuracy_without_tta"] = accuracy(y_val, plain)
    metrics["temperature"] = temperature
    print(format_metrics(metrics))

    best.save(out / MODEL_FILENAME)
    # The .onnx files the app serves: checked against Keras on the validation faces, INT8 ranges from training faces.
    calibration = np.random.default_rng(recipe["seed"]).permutation(len(x_train))[:1024]
    export_onnx(best, out, x_val, model_inputs(x_train[calibration][..., None], recipe["normalization"]))
    config = {
        "labels": list(LABELS),
        "input_size": [INPUT_SIZE, INPUT_SIZE, 1],
        "preprocessing": "square crop framing the face box (padded beyond the border), grayscale, resized to 48x48 "
        "(INTER_AREA when shrinking), normalised per face, scaled to [0, 1]; emotion.preprocess.face_input",
        **face_input.to_config(),
        "architecture": recipe["arch"],
        "parameters": int(best.count_params()),
        "tta": tta,
        "blur_sigma": blur_sigma,
        "temperature": temperature,
        "training": {
            **recipe,
            "precision": precision,
            "epochs_run": state["epoch"],
            "best_epoch": state["best_epoch"],
            "training_seconds": round(state["seconds"]),
            "hardware": f"{machine_info()['cpu_model'] or platform.machine()}, {os.cpu_count()} CPU cores, {len(gpus)} GPU(s)",
            "train_images": int(len(x_train)),
            "val_images": int(len(x_val)),
            "data": str(args.data),
            "init_training": init_training(recipe["init_from"]),
            "weight_averaging": averaging,
        },
        "val_metrics": {k: metrics[k] for k in ("accuracy", "macro_f1", "weighted_f1", "loss", "ece")},
        "development_results": results,
    }
    (out / CONFIG_FILENAME).write_text(json.dumps(config, indent=2))
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2))  # python train.py --data DIR --config recipe.json
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_confusion_matrix(metrics["confusion_matrix"], out / "confusion_matrix.png", "Validation confusion matrix")
    plot_training_curves(state["history"], out / "training_curves.png")
    write_model_card(out, config, metrics)
    log.info("wrote model folder %s", out)

    if args.push_to_hub:
        try:
            url = push_to_hub(out, args.push_to_hub, tag=args.hub_tag)
        except Exception as error:  # noqa: BLE001 - network, auth or Hub errors all end the same way
            log.error("Upload to %s failed (%s: %s). The model folder %s is intact; once online, "
                      "run the same command with --resume to upload it without retraining.",
                      args.push_to_hub, type(error).__name__, str(error).splitlines()[0] if str(error) else "", out)
            return 1
        log.info("uploaded to %s", url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
