"""Train the emotion classifier on folder-per-label face crops and write a model folder (optionally to the Hub).

    python train.py --data ../shared/data/fer2013 --out runs/default          # the default recipe (VGG trunk)
    python train.py --data ../shared/data/fer2013 --arch seed --out runs/seed # the seed report's CNN, as written
    python train.py --data ... --out runs/default --resume                    # continue after an interruption
    python train.py --data ... --config runs/default/recipe.json              # rerun a model folder's recipe
    python train.py --data ... --init-from runs/default --lr 0.03 --epochs 80 --out runs/v2  # a warm restart

DIR holds train/ plus val/ (or validation/ or test/), or a single folder-per-label tree that is split 80:20,
stratified, with a fixed seed. The output folder holds emotion_cnn.keras, config.json, metrics.json,
confusion_matrix.png, training_curves.png and a README.md model card; checkpoints/ holds what --resume needs.
"""

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from emotion.bench import machine_info
from emotion.calibration import apply_temperature, fit_temperature
from emotion.classifier import Classifier
from emotion.data import load_dataset
from emotion.labels import LABELS
from emotion.metrics import compute_metrics, format_metrics
from emotion.model_card import write_model_card
from emotion.model_store import CONFIG_FILENAME, DEFAULT_REVISION, MODEL_FILENAME, load_model_dir, push_to_hub
from emotion.networks import build_model
from emotion.plots import plot_confusion_matrix, plot_training_curves
from emotion.preprocess import INPUT_SIZE

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
                       mix="none", mix_alpha=None, distill_from=None, distill_weight=0.5, widths=None)

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
    p.add_argument("--average-from", type=int, metavar="EPOCH",
                   help="stochastic weight averaging: average the weights of every epoch from EPOCH on")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.keras "
                   "(with a constant or plateau schedule, --epochs may change: to extend the run or end it early)")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the model folder (token from $HF_TOKEN)")
    p.add_argument("--hub-tag", default=DEFAULT_REVISION, help="tag the uploaded commit (the app pins this revision)")
    return p.parse_args(argv)


def resolve_recipe(args: argparse.Namespace) -> dict:
    """Every setting of the run: the architecture's recipe, then --config, then explicit flags."""
    overrides = json.loads(Path(args.config).read_text()) if args.config else {}
    arch = args.arch or overrides.get("arch", "vgg")
    recipe = dict(RECIPES[arch], arch=arch, **COMMON_DEFAULTS)
    unknown = set(overrides) - set(recipe)
    assert not unknown, f"unknown settings in {args.config}: {sorted(unknown)}"
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
    return recipe


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


def class_weights(y: np.ndarray) -> np.ndarray:
    """Per-class weights proportional to 1/sqrt(frequency), normalised to a mean sample weight of 1."""
    counts = np.bincount(y, minlength=len(LABELS)).astype(np.float64)
    weights = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1)), 0.0)
    return weights / (weights[y].mean())


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


def make_datasets(train, val, recipe, teacher: np.ndarray | None = None) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Batched training (faces, targets, sample weights) and validation (faces, one-hot) data. `teacher`, the
    teacher's probabilities for each training face, takes `distill_weight` of every target."""
    (x_train, y_train), (x_val, y_val) = train, val
    weights = class_weights(y_train) if recipe["class_weighting"] else np.ones(len(LABELS))
    onehot = np.eye(len(LABELS), dtype=np.float32)
    targets = onehot[y_train]
    if teacher is not None:
        targets = (1 - recipe["distill_weight"]) * targets + recipe["distill_weight"] * teacher.astype(np.float32)
    train_ds = tf.data.Dataset.from_tensor_slices(
        (x_train, targets, weights[y_train].astype(np.float32))
    ).shuffle(len(x_train), seed=recipe["seed"], reshuffle_each_iteration=True)
    train_ds = train_ds.batch(recipe["batch_size"], drop_remainder=len(x_train) >= recipe["batch_size"])
    augment = augmentation(recipe["augment"])
    if augment is not None:
        train_ds = train_ds.map(lambda x, y, w: (augment(x, training=True), y, w), num_parallel_calls=tf.data.AUTOTUNE)
    elif recipe["augment"] == "affine":
        train_ds = map_with_seeds(train_ds, recipe["seed"] + 1, lambda x, y, w, seed: (affine_augment(x, seed), y, w))
    val_ds = tf.data.Dataset.from_tensor_slices((x_val, onehot[y_val])).batch(256)
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
    """Each epoch: save last.keras + state.json (for --resume) and best.keras when validation accuracy improves."""

    def __init__(self, folder: Path, state: dict):
        super().__init__()
        self.folder, self.state = folder, state
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for key, value in logs.items():
            self.state["history"].setdefault(key, []).append(float(value))
        self.state["epoch"] = epoch + 1
        self.state["seconds"] += time.time() - self.started
        self.started = time.time()
        if logs.get("val_accuracy", -1) > self.state["best_val_accuracy"]:
            self.state["best_val_accuracy"] = float(logs["val_accuracy"])
            self.state["best_epoch"] = epoch + 1
            self.model.save(self.folder / "best.keras")
        self.model.save(self.folder / "last.keras")
        (self.folder / "state.json").write_text(json.dumps(self.state, indent=1))
        log.info(
            "epoch %d: val_accuracy %.4f (best %.4f at epoch %d), %.0f s so far",
            epoch + 1, logs.get("val_accuracy", float("nan")), self.state["best_val_accuracy"],
            self.state["best_epoch"], self.state["seconds"],
        )


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


def choose_inference(model: keras.Model, x_val: np.ndarray, y_val: np.ndarray) -> tuple[str, float, np.ndarray, np.ndarray]:
    """Pick the test-time flip and input blur (`Classifier`) that score best on validation; return them with that
    setting's probabilities and the plain ones (no flip, no blur)."""
    tried = {(tta, sigma): Classifier(model, tta=tta, blur_sigma=sigma).predict(x_val)
             for tta in ("none", "flip") for sigma in BLUR_SIGMAS}
    # Ties go to the cheaper setting: no flip before flip, less blur before more (the order tried is built in).
    tta, sigma = max(tried, key=lambda key: accuracy(y_val, tried[key]))
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


def teacher_probabilities(folder: str, faces: np.ndarray) -> np.ndarray:
    """A model folder's probabilities for `faces`, read as the app reads faces (its flip and blur; no temperature)."""
    teacher, config = load_model_dir(folder)
    started = time.time()
    probs = Classifier.from_config(teacher, {**config, "temperature": 1.0}).predict(faces)
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
    path = Path(init_from)
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

    started = time.time()
    train, val = load_dataset(args.data, recipe["val_fraction"], recipe["seed"])
    log.info("loaded %d training and %d validation images in %.1f s", len(train[0]), len(val[0]), time.time() - started)
    teacher = None
    if recipe["distill_from"]:
        teacher = np.mean([teacher_probabilities(folder, train[0]) for folder in recipe["distill_from"]], axis=0)
    train_ds, val_ds = make_datasets(train, val, recipe, teacher)
    steps_per_epoch = int(train_ds.cardinality())

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
            assert not changed, f"--resume needs the interrupted run's recipe; these differ (was, now): {changed}"
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
    callbacks = [Checkpoints(ckpt, state)]
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
    x_val, y_val = val
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
    tta, blur_sigma, raw, plain = choose_inference(best, x_val, y_val)
    temperature = fit_temperature(y_val, raw)
    metrics = compute_metrics(y_val, apply_temperature(raw, temperature))
    metrics["ece_before_calibration"] = compute_metrics(y_val, raw)["ece"]
    metrics["ece_after_calibration_heldout"] = heldout_calibrated_ece(y_val, raw)
    metrics["accuracy_without_tta"] = accuracy(y_val, plain)
    metrics["temperature"] = temperature
    print(format_metrics(metrics))

    best.save(out / MODEL_FILENAME)
    config = {
        "labels": list(LABELS),
        "input_size": [INPUT_SIZE, INPUT_SIZE, 1],
        "preprocessing": "grayscale, resized to 48x48 (INTER_AREA when shrinking), scaled to [0, 1]; "
        "emotion.preprocess.preprocess_face",
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
            "train_images": int(len(train[0])),
            "val_images": int(len(val[0])),
            "data": str(args.data),
            "init_training": init_training(recipe["init_from"]),
            "weight_averaging": averaging,
        },
        "val_metrics": {k: metrics[k] for k in ("accuracy", "macro_f1", "weighted_f1", "loss", "ece")},
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
