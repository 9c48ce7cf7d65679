"""train.py end to end on tiny generated data: it really trains, writes the model folder, resumes and uploads."""

import json
import logging
import shutil
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from huggingface_hub import constants

import train
from emotion import model_store
from emotion.classifier import Classifier
from emotion.data import load_dataset, stratified_split
from emotion.networks import build_model
from fakedata import chain, make_face_folders, with_trained_statistics

OUTPUTS = ["emotion_cnn.keras", "config.json", "recipe.json", "metrics.json", "confusion_matrix.png",
           "training_curves.png", "README.md"]
FAST = ["--epochs", "5", "--batch-size", "16", "--augment", "none", "--lr", "0.05"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    make_face_folders(root / "train", per_class=16, seed=1)
    make_face_folders(root / "val", per_class=6, seed=2)
    return root


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "model"
    assert train.main(["--data", str(data), "--out", str(out), *FAST]) == 0
    return out


def test_seed_architecture_is_the_seed_report_cnn():
    model = build_model("seed")
    assert isinstance(model, keras.Sequential)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "BatchNormalization", "Activation", "MaxPooling2D", "Dropout"] * 5 + [
        "Flatten"] + ["Dense", "Activation", "Dropout"] * 2 + ["Dense"]
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [64, 128, 256, 512, 512]
    assert all(c.kernel_size == (3, 3) for c in convs)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [512, 512, 7]
    assert dense[-1].activation.__name__ == "softmax"
    assert train.RECIPES["seed"]["optimizer"] == "adam" and train.RECIPES["seed"]["lr"] == 1e-3
    assert model.count_params() == 4_444_423  # facts.md: the seed CNN has 4.45 M parameters


def test_training_writes_a_complete_model_folder(trained):
    for name in OUTPUTS:
        assert (trained / name).is_file(), name
    config = json.loads((trained / "config.json").read_text())
    assert config["labels"] == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert config["input_size"] == [48, 48, 1] and config["architecture"] == "vgg"
    assert config["training"]["epochs_run"] == 5 and config["training"]["optimizer"] == "sgd"
    metrics = json.loads((trained / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "weighted_f1", "loss", "macro_precision", "macro_recall", "per_class", "ece",
                "ece_before_calibration", "ece_after_calibration_heldout"):
        assert key in metrics
    card = (trained / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: keras" in card and f"{metrics['accuracy']:.4f}" in card


def test_recipe_json_reproduces_the_run_settings(trained, data, tmp_path):
    recipe = json.loads((trained / "recipe.json").read_text())
    assert recipe["epochs"] == 5 and recipe["augment"] == "none" and recipe["arch"] == "vgg"
    args = train.parse_args(["--data", str(data), "--config", str(trained / "recipe.json")])
    assert train.resolve_recipe(args) == recipe
    args = train.parse_args(["--data", str(data), "--config", str(trained / "recipe.json"), "--epochs", "9"])
    assert train.resolve_recipe(args)["epochs"] == 9  # flags override the file


def test_an_existing_run_is_not_overwritten_without_resume(data, trained, caplog):
    before = (trained / "checkpoints" / "state.json").read_text()
    with caplog.at_level(logging.ERROR, logger="train"):
        assert train.main(["--data", str(data), "--out", str(trained), *FAST]) == 2
    assert "--resume" in caplog.text
    assert (trained / "checkpoints" / "state.json").read_text() == before


def test_training_actually_learns(trained):
    state = json.loads((trained / "checkpoints" / "state.json").read_text())
    losses, accuracy = state["history"]["loss"], state["history"]["accuracy"]
    assert losses[-1] < losses[0]
    # Chance is 1/7. Validation is not asserted: 35 steps are too few for BatchNorm's moving statistics to settle.
    assert accuracy[-1] > 0.8 > accuracy[0]


def test_the_model_folder_loads_like_the_bundled_one(trained):
    loaded = model_store.load(repo_id=str(trained))
    assert loaded.source == f"local:{trained}"
    assert loaded.model.output_shape == (None, 7)
    assert loaded.model.dtype_policy.name == "float32"


def test_resume_continues_after_the_last_finished_epoch(data, trained, tmp_path, caplog):
    out = tmp_path / "model"
    (out / "checkpoints").mkdir(parents=True)
    for name in ("last.keras", "best.keras"):
        (out / "checkpoints" / name).write_bytes((trained / "checkpoints" / name).read_bytes())
    state = json.loads((trained / "checkpoints" / "state.json").read_text())
    state["epoch"] = 4  # as if interrupted during epoch 5
    state["history"] = {k: v[:4] for k, v in state["history"].items()}
    (out / "checkpoints" / "state.json").write_text(json.dumps(state))
    with caplog.at_level(logging.INFO, logger="train"):
        assert train.main(["--data", str(data), "--out", str(out), *FAST, "--resume"]) == 0
    assert "resuming after epoch 4" in caplog.text
    assert len(json.loads((out / "checkpoints" / "state.json").read_text())["history"]["loss"]) == 5


def test_single_folder_is_split_80_20_stratified(tmp_path):
    make_face_folders(tmp_path, per_class=10, labels=("angry", "happy", "sad"))
    (x_train, y_train, paths), (x_val, y_val, _) = load_dataset(tmp_path)
    assert len(x_train) == 24 and len(x_val) == 6 and len(paths) == 24
    assert x_train.dtype == np.uint8 and x_train.shape[1:] == (48, 48)  # faces in their own pixels
    assert sorted(np.bincount(y_val)[[0, 3, 5]]) == [2, 2, 2]
    a, b = stratified_split(np.repeat(np.arange(7), 20), seed=3), stratified_split(np.repeat(np.arange(7), 20), seed=3)
    np.testing.assert_array_equal(a[1], b[1])


def test_push_without_network_fails_clearly_and_keeps_the_folder(data, trained, monkeypatch, caplog):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_TOKEN", "hf_dummy")
    before = sorted(p.name for p in trained.iterdir())
    with caplog.at_level(logging.ERROR, logger="train"):
        code = train.main(["--data", str(data), "--out", str(trained), *FAST, "--resume", "--push-to-hub", "me/emotion"])
    assert code == 1
    assert "Upload to me/emotion failed" in caplog.text and "is intact" in caplog.text
    assert sorted(p.name for p in trained.iterdir()) == before


def test_init_from_starts_from_the_given_weights_and_records_the_lineage(data, trained, tmp_path):
    out = tmp_path / "restart"
    # A learning rate of ~0 keeps the weights where --init-from put them, so they must equal the source model's.
    args = ["--data", str(data), "--out", str(out), *FAST, "--epochs", "1", "--lr", "1e-12", "--init-from", str(trained)]
    assert train.main(args) == 0
    source = keras.saving.load_model(trained / "emotion_cnn.keras")
    restarted = keras.saving.load_model(out / "emotion_cnn.keras")
    np.testing.assert_allclose(restarted.get_layer("s1_conv1").kernel.numpy(), source.get_layer("s1_conv1").kernel.numpy(), atol=1e-6)
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["init_from"] == str(trained)
    assert config["training"]["init_training"]["epochs_run"] == 5
    assert json.loads((out / "recipe.json").read_text())["init_from"] == str(trained)
    assert "Warm restart: started from the weights of" in (out / "README.md").read_text()


def test_weight_average_is_the_mean_of_the_epoch_end_weights(tmp_path):
    model = build_model("vgg")
    state = {}
    callback = train.WeightAverage(start=2, folder=tmp_path, state=state)
    callback.set_model(model)
    snapshots = []
    for epoch in range(4):  # epochs 1..4; epochs 2, 3 and 4 are averaged
        for variable in model.trainable_variables:
            variable.assign(np.random.default_rng(epoch).normal(size=variable.shape).astype(np.float32))
        snapshots.append([v.numpy() for v in model.trainable_variables])
        callback.on_epoch_end(epoch)
    assert state["averaged_epochs"] == 3
    expected = [np.mean([snap[i] for snap in snapshots[1:]], axis=0) for i in range(len(snapshots[0]))]
    for got, want in zip(train.load_average(tmp_path / "average.npz"), expected):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_weight_averaging_run_picks_on_validation_and_resumes(data, tmp_path, caplog):
    out = tmp_path / "swa"
    args = ["--data", str(data), "--out", str(out), *FAST, "--average-from", "4"]
    with caplog.at_level(logging.INFO, logger="train"):
        assert train.main(args) == 0
    assert "weight average of 2 epochs" in caplog.text
    averaging = json.loads((out / "config.json").read_text())["training"]["weight_averaging"]
    assert averaging["epochs"] == 2 and averaging["from_epoch"] == 4
    assert 0 <= averaging["val_accuracy"] <= 1 and averaging["used"] == (
        averaging["val_accuracy"] >= averaging["best_checkpoint_val_accuracy"])
    assert "Stochastic weight averaging of the 2 epochs" in (out / "README.md").read_text()
    # Interrupted after epoch 4 (one epoch averaged): --resume trains epoch 5 and adds it to the average.
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    state.update(epoch=4, averaged_epochs=1, history={k: v[:4] for k, v in state["history"].items()})
    (out / "checkpoints" / "state.json").write_text(json.dumps(state))
    assert train.main([*args, "--resume"]) == 0
    assert json.loads((out / "checkpoints" / "state.json").read_text())["averaged_epochs"] == 2


def flat_faces(dtype=np.float32):
    """Face i is flat grey i, has label i and class weight 10 + i."""
    n = len(train.LABELS)
    x = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, 48, 48, 1))
    return tf.cast(x, dtype), np.eye(n, dtype=np.float32), 10 + np.arange(n, dtype=np.float32)


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixing_counts_each_face_with_its_share_and_class_weight(kind):
    x, y, w = flat_faces()
    mixed_any = False
    for draw in range(40):
        xm, ym, wm = (t.numpy() for t in train.mix_batch(x, y, w, kind, train.MIX_ALPHA[kind], tf.constant([draw, 7])))
        # The loss is wm * CE(ym) = sum over both faces of (share x class weight x CE), so ym * wm / w is each face's
        # share of the image: the shares sum to 1 and give the mixed face's mean brightness.
        shares = ym * wm[:, None] / w[None, :]
        np.testing.assert_allclose(shares.sum(1), 1, atol=1e-4)
        np.testing.assert_allclose(xm.mean(axis=(1, 2, 3)), shares @ np.arange(len(w)), atol=1e-3)
        mixed_any |= bool((shares.max(1) < 0.99).any())
        if kind == "cutmix":  # a pasted box: every pixel is one of the two faces', never a blend
            for face, share in zip(xm, shares):
                assert set(np.unique(face)) <= set(np.flatnonzero(share > 0).astype(np.float32))
    assert mixed_any


def test_mixing_keeps_bfloat16_faces_and_draws_from_its_seed():
    x, y, w = flat_faces(tf.bfloat16)
    first, again, other = (train.mix_batch(x, y, w, "mixup", 0.4, tf.constant(s)) for s in ([1, 2], [1, 2], [3, 4]))
    assert first[0].dtype == tf.bfloat16
    np.testing.assert_array_equal(first[1].numpy(), again[1].numpy())
    assert not np.allclose(first[1].numpy(), other[1].numpy())


def test_mixing_draws_anew_each_epoch_and_alike_each_run():
    x, y, w = flat_faces()
    batches = tf.data.Dataset.from_tensors((x, y, w)).repeat(3)
    recipe = {"mix": "mixup", "mix_alpha": 0.4, "seed": 5}
    mixed = train.with_mixing(batches, recipe)
    epochs = [[t.numpy() for _, t, _ in mixed] for _ in range(2)]
    rerun = [t.numpy() for _, t, _ in train.with_mixing(batches, recipe)]
    assert not np.allclose(epochs[0][0], epochs[1][0])  # second epoch, other draws
    assert not np.allclose(epochs[0][0], epochs[0][1])  # second batch, other draws
    np.testing.assert_array_equal(epochs[0][0], rerun[0])  # a new run repeats the first epoch


def test_mix_alpha_follows_the_mix(tmp_path):
    config = tmp_path / "recipe.json"
    config.write_text(json.dumps({"mix": "cutmix", "mix_alpha": 1.0}))
    resolve = lambda *flags: train.resolve_recipe(train.parse_args(["--data", "d", *flags]))
    assert resolve("--config", str(config), "--mix", "mixup")["mix_alpha"] == train.MIX_ALPHA["mixup"]
    assert resolve("--config", str(config))["mix_alpha"] == 1.0
    assert resolve("--mix-alpha", "0.3")["mix_alpha"] is None  # no mix, no alpha
    assert resolve("--mix", "cutmix", "--mix-alpha", "0.3")["mix_alpha"] == 0.3
    with pytest.raises(SystemExit, match="positive"):
        resolve("--mix", "cutmix", "--mix-alpha", "0")


def test_resume_refuses_a_mix_an_older_run_did_not_use(data, trained, tmp_path):
    out = tmp_path / "old"
    shutil.copytree(trained, out)
    state_path = out / "checkpoints" / "state.json"
    state = json.loads(state_path.read_text())
    for key in ("mix", "mix_alpha"):  # written before --mix existed
        state["recipe"].pop(key)
    state_path.write_text(json.dumps(state))
    with pytest.raises(SystemExit, match="mix"):
        train.main(["--data", str(data), "--out", str(out), *FAST, "--resume", "--mix", "cutmix"])


def test_training_with_cutmix_under_bfloat16_records_the_mix(data, tmp_path):
    out = tmp_path / "cutmix"
    args = ["--data", str(data), "--out", str(out), *FAST, "--epochs", "2", "--augment", "light",
            "--precision", "mixed_bfloat16", "--mix", "cutmix"]
    assert train.main(args) == 0
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["mix"] == "cutmix" and recipe["mix_alpha"] == train.MIX_ALPHA["cutmix"]
    assert "with cutmix (alpha 1.0)" in (out / "README.md").read_text()


def test_inference_setting_is_the_best_on_validation(data, trained):
    model = keras.saving.load_model(trained / "emotion_cnn.keras")
    _, (val_faces, y_val, _) = load_dataset(data)
    x_val = train.model_inputs(val_faces[..., None], "equalize")
    tta, sigma, probs, plain = train.choose_inference(model, x_val, y_val)
    accuracy = lambda p: (p.argmax(1) == y_val).mean()
    every = [accuracy(Classifier(model, tta=t, blur_sigma=s).predict(x_val)) for t in ("none", "flip") for s in train.BLUR_SIGMAS]
    assert accuracy(probs) == max(every)
    np.testing.assert_allclose(probs, Classifier(model, tta=tta, blur_sigma=sigma).predict(x_val), atol=1e-6)
    np.testing.assert_allclose(plain, Classifier(model).predict(x_val), atol=1e-6)
    config = json.loads((trained / "config.json").read_text())
    assert config["tta"] in ("none", "flip") and config["blur_sigma"] in train.BLUR_SIGMAS


def test_affine_augmentation_moves_the_centre_only_by_the_shift():
    # Rotation and zoom turn about the centre, so a dot there moves by the shift alone (at most 10 % = 4.8 px).
    x = np.zeros((64, 48, 48, 1), np.float32)
    x[:, 22:26, 22:26] = 1.0
    out = train.affine_augment(tf.constant(x), tf.constant([3, 4])).numpy()[..., 0]
    assert out.shape == (64, 48, 48)
    rows, cols = np.mgrid[:48, :48]
    bright = out > 0.9  # the dot (erasing paints 0.5)
    centres = np.array([[rows[b].mean(), cols[b].mean()] for b in bright if b.any()])
    assert len(centres) > 48
    assert np.abs(centres - 23.5).max() <= 0.1 * 48 + 1
    assert np.abs(centres - 23.5).max() > 1  # and it does shift


def test_affine_augmentation_flips_left_and_right_only():
    # A dot in the upper left stays in the upper half (small rotation, zoom and shift), and is mirrored into the
    # upper right for about half the faces: a flip of the wrong axis, or rows and columns swapped, would move it.
    x = np.zeros((64, 48, 48, 1), np.float32)
    x[:, 8:12, 4:8] = 1.0
    out = train.affine_augment(tf.constant(x), tf.constant([9, 9])).numpy()[..., 0]
    rows, cols = np.mgrid[:48, :48]
    centres = np.array([[rows[b].mean(), cols[b].mean()] for b in out > 0.9 if b.any()])
    assert (centres[:, 0] < 20).all()
    mirrored = (centres[:, 1] > 23.5).mean()
    assert 0.25 < mirrored < 0.75


def test_affine_augmentation_erases_with_grey_and_repeats_its_seed():
    x = tf.fill([64, 48, 48, 1], 0.25)
    out = train.affine_augment(x, tf.constant([1, 2])).numpy()
    assert set(np.unique(out)) == {0.25, 0.5}  # a flat face stays flat (edges filled by the nearest pixel), or erased
    erased = (out == 0.5).mean(axis=(1, 2, 3))
    assert 0.2 < (erased > 0).mean() < 0.8 and erased.max() <= 0.17
    np.testing.assert_array_equal(out, train.affine_augment(x, tf.constant([1, 2])).numpy())
    assert not np.array_equal(out, train.affine_augment(x, tf.constant([5, 6])).numpy())


def test_affine_augmentation_keeps_faces_sharper_than_the_strong_layers():
    faces = np.random.default_rng(0).uniform(size=(128, 48, 48, 1)).astype(np.float32)
    detail = lambda images: float(np.abs(np.diff(np.asarray(images), axis=2)).mean())  # noqa: E731
    affine = train.affine_augment(tf.constant(faces), tf.constant([0, 1]))
    strong = train.augmentation("strong")(faces, training=True)
    assert detail(affine) > 1.2 * detail(strong)


def test_distillation_target_is_the_label_mixed_with_the_teacher():
    x, y, _ = flat_faces()
    labels = y.argmax(1)
    teacher = np.random.default_rng(0).dirichlet(np.ones(7), size=7).astype(np.float32)
    recipe = dict(train.COMMON_DEFAULTS, class_weighting=False, batch_size=7, augment="none", distill_weight=0.25,
                  normalization="none", capture=False)
    faces = x.numpy()[..., 0].astype(np.uint8)
    train_ds, _ = train.make_datasets(faces, y, x.numpy(), labels, recipe, teacher)
    faces, targets, _ = next(iter(train_ds))
    for face, target in zip(faces.numpy(), targets.numpy()):
        i = int(round(face[0, 0, 0] * 255))
        np.testing.assert_allclose(target, 0.75 * y[i] + 0.25 * teacher[i], atol=1e-6)
    with pytest.raises(SystemExit, match="between 0 and 1"):
        train.resolve_recipe(train.parse_args(["--data", "d", "--distill-weight", "1.5"]))


def test_training_distilled_from_teachers_learns_their_mean(data, trained, tmp_path, monkeypatch, caplog):
    second = tmp_path / "second"
    assert train.main(["--data", str(data), "--out", str(second), *FAST, "--epochs", "1"]) == 0
    seen = {}
    make_datasets = train.make_datasets

    def spy(x_train, targets, x_val, y_val, recipe, teacher=None):
        seen["teacher"] = teacher
        return make_datasets(x_train, targets, x_val, y_val, recipe, teacher)

    monkeypatch.setattr(train, "make_datasets", spy)
    out = tmp_path / "student"
    args = ["--data", str(data), "--out", str(out), *FAST, "--epochs", "2", "--augment", "affine",
            "--distill-from", str(trained), str(second), "--init-from", str(trained)]
    with caplog.at_level(logging.INFO, logger="train"):
        assert train.main(args) == 0
    assert f"teacher {trained}: probabilities for" in caplog.text and f"teacher {second}: probabilities for" in caplog.text
    (faces, _, _), _ = load_dataset(data)
    x_train = train.model_inputs(faces[..., None], "equalize")  # the teachers' own preprocessing
    each = [Classifier.from_config(keras.saving.load_model(folder / "emotion_cnn.keras"),
                                   json.loads((folder / "config.json").read_text())) for folder in (trained, second)]
    # No temperature: the teachers' own probabilities.
    expected = np.mean([Classifier(c.model, tta=c.tta, blur_sigma=c.blur_sigma).predict(x_train) for c in each], axis=0)
    np.testing.assert_allclose(seen["teacher"], expected, atol=1e-5)
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["distill_from"] == [str(trained), str(second)] and recipe["distill_weight"] == 0.5
    assert recipe["augment"] == "affine"
    assert f"mean probabilities that `{trained}`, `{second}` give the face" in (out / "README.md").read_text()


def test_a_single_teacher_written_as_a_string_still_resolves(tmp_path):
    # A hand-written --config may name its one teacher as a string.
    config = tmp_path / "recipe.json"
    config.write_text(json.dumps({"distill_from": "runs/teacher", "augment": "affine"}))
    recipe = train.resolve_recipe(train.parse_args(["--data", "d", "--config", str(config)]))
    assert recipe["distill_from"] == ["runs/teacher"]


def test_widening_keeps_every_prediction_and_refuses_to_shrink():
    narrow = with_trained_statistics(build_model("vgg", widths=[8, 16, 24, 32]))
    wide = build_model("vgg", widths=[8, 16, 40, 64])
    train.widen_into(narrow, wide)
    x = np.random.default_rng(1).random((6, 48, 48, 1), dtype=np.float32)
    np.testing.assert_allclose(wide.predict(x, verbose=0), narrow.predict(x, verbose=0), atol=1e-6)
    assert wide.get_layer("s4_conv2").kernel.shape == (3, 3, 64, 64)
    assert np.abs(wide.get_layer("s4_conv2").kernel.numpy()[:, :, :, 32:]).sum() > 0  # the new filters are random
    with pytest.raises(ValueError, match="does not fit"):
        train.widen_into(wide, narrow)
    with pytest.raises(ValueError, match="different layers"):
        train.widen_into(build_model("seed"), wide)
    seed = with_trained_statistics(build_model("seed"))  # equal widths; auto-named layers differ between builds
    copy = build_model("seed")
    train.widen_into(seed, copy)
    np.testing.assert_allclose(copy.predict(x, verbose=0), seed.predict(x, verbose=0), atol=1e-6)


def test_widths_are_a_vgg_setting_that_a_widened_run_records(data, trained, tmp_path):
    out = tmp_path / "wide"
    args = ["--data", str(data), "--out", str(out), *FAST, "--epochs", "1", "--init-from", str(trained),
            "--widths", "32", "64", "128", "320"]
    assert train.main(args) == 0
    loaded = model_store.load_model_dir(out)
    assert loaded[0].get_layer("s4_conv2").filters == 320
    assert json.loads((out / "recipe.json").read_text())["widths"] == [32, 64, 128, 320]
    assert "filters per stage 32-64-128-320" in (out / "README.md").read_text()
    with pytest.raises(SystemExit, match="vgg only"):
        train.main(["--data", str(data), "--out", str(tmp_path / "seed"), "--arch", "seed", "--widths", "8", "16"])


def test_resume_may_change_the_length_unless_the_schedule_is_cosine(data, trained, tmp_path, caplog):
    out = tmp_path / "constant"
    args = ["--data", str(data), "--out", str(out), *FAST, "--schedule", "constant"]
    assert train.main([*args, "--epochs", "2"]) == 0
    with caplog.at_level(logging.INFO, logger="train"):
        assert train.main([*args, "--epochs", "3", "--resume"]) == 0  # extended by one epoch
    assert "resuming after epoch 2" in caplog.text
    assert json.loads((out / "config.json").read_text())["training"]["epochs_run"] == 3
    with pytest.raises(SystemExit, match="below the 3 epochs"):
        train.main([*args, "--epochs", "1", "--resume"])
    cosine = tmp_path / "cosine"
    shutil.copytree(trained, cosine)
    with pytest.raises(SystemExit, match="epochs"):  # a cosine schedule was built for its original length
        train.main(["--data", str(data), "--out", str(cosine), *FAST, "--epochs", "6", "--resume"])


def test_widening_refuses_other_kernels_and_outputs_and_changes_nothing_then():
    def small(first=4, second=4, kernel=3, classes=7):
        return chain(keras.layers.Conv2D(first, 3, name="c1"), keras.layers.Conv2D(second, kernel, name="c2"),
                     keras.layers.GlobalAveragePooling2D(name="gap"), keras.layers.Dense(classes, name="d"))
    with pytest.raises(ValueError, match="does not fit"):
        train.widen_into(small(), small(kernel=5))
    with pytest.raises(ValueError, match="outputs differ"):
        train.widen_into(small(), small(classes=8))
    target = small(first=8, second=2)  # c1 would fit, c2 cannot: nothing may be copied
    before = target.get_layer("c1").kernel.numpy()
    with pytest.raises(ValueError, match="does not fit"):
        train.widen_into(small(), target)
    np.testing.assert_array_equal(target.get_layer("c1").kernel.numpy(), before)


VOTES_HEADER = "split,label,file,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"


def test_label_sources_are_fer2013_ferplus_votes_or_a_mix(tmp_path):
    votes = tmp_path / "votes.csv"
    # Face a: FER2013 says angry, FER+ 6 neutral + 2 anger + 2 contempt votes; face b: only unknown votes.
    votes.write_text(VOTES_HEADER + "train,angry,a.jpg,6,0,0,0,2,0,0,2,0,0\ntrain,happy,b.jpg,0,0,0,0,0,0,0,0,9,1\n")
    y = np.array([train.LABELS.index("angry"), train.LABELS.index("happy")])
    paths = [Path("angry/a.png"), Path("happy/b.png")]
    recipe = dict(train.COMMON_DEFAULTS)
    onehot, keep = train.training_targets(y, paths, {**recipe, "labels": "fer2013"}, None)
    np.testing.assert_array_equal(onehot, np.eye(7)[y])
    assert keep.all()
    soft, keep = train.training_targets(y, paths, {**recipe, "labels": "ferplus"}, votes)
    assert keep.tolist() == [True, False]  # no vote left among the 7 labels: skipped
    assert soft[0][train.LABELS.index("neutral")] == 0.75 and soft[0][train.LABELS.index("angry")] == 0.25
    mixed, keep = train.training_targets(y, paths, {**recipe, "labels": "mix", "ferplus_weight": 0.2}, votes)
    assert keep.all()
    np.testing.assert_allclose(mixed[0], 0.8 * np.eye(7)[y[0]] + 0.2 * soft[0])
    np.testing.assert_array_equal(mixed[1], np.eye(7)[y[1]])  # the FER2013 label alone where FER+ has no vote
    with pytest.raises(SystemExit, match="--votes"):
        train.training_targets(y, paths, {**recipe, "labels": "mix"}, tmp_path / "missing.csv")


def test_soft_class_weights_count_target_shares():
    y = np.array([0, 0, 0, 1])
    np.testing.assert_allclose(train.class_weights(y), train.class_weights(np.eye(7)[y]))
    weights = train.class_weights(np.eye(7)[y])
    assert np.isclose((np.eye(7)[y] @ weights).mean(), 1.0) and weights[1] > weights[0]


def test_training_with_mixed_labels_reads_the_votes_beside_the_data(data, tmp_path, caplog):
    names = [p.stem for p in sorted((data / "train").rglob("*.png"))]
    votes = data.parent / "fer2013" / "ferplus_votes.csv"
    votes.parent.mkdir(exist_ok=True)
    votes.write_text(VOTES_HEADER + "".join(f"train,x,{name}.jpg,1,1,1,1,1,1,1,0,0,0\n" for name in names[:5]))
    out = tmp_path / "mixed"
    with caplog.at_level(logging.INFO, logger="train"):
        assert train.main(["--data", str(data), "--out", str(out), *FAST, "--epochs", "1", "--labels", "mix",
                           "--ferplus-weight", "0.3"]) == 0
    assert "FER+ votes for" in caplog.text
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["labels"] == "mix" and recipe["ferplus_weight"] == 0.3
    votes.unlink()


def test_the_resolved_recipe_is_saved_when_the_run_starts(data, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SystemExit):  # stops after the recipe is written: the votes it asks for do not exist
        train.main(["--data", str(data), "--out", str(out), *FAST, "--labels", "ferplus", "--votes", "nowhere.csv"])
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["labels"] == "ferplus" and recipe["epochs"] == 5 and recipe["normalization"] == "equalize"
    assert set(recipe) == set(train.resolve_recipe(train.parse_args(["--data", "d"])))  # every setting, resolved


@pytest.mark.parametrize("content, message", [
    ({"epochs": 3, "learning_rate": 0.1}, "unknown settings"),
    ({"epochs": 0}, "epochs must be a positive"),
    ({"ferplus_weight": 2}, "ferplus-weight must be between 0 and 1"),
    ({"labels": "votes"}, "labels must be one of"),
    ({"normalization": "sharpen"}, "normalization must be one of"),
    ({"init_from": "models"}, "git:<commit>:models"),
    ([1, 2], "JSON object"),
])
def test_config_files_are_checked_with_clear_errors(tmp_path, content, message):
    config = tmp_path / "recipe.json"
    config.write_text(json.dumps(content))
    with pytest.raises(SystemExit, match=message):
        train.resolve_recipe(train.parse_args(["--data", "d", "--config", str(config)]))
    config.write_text("{not json")
    with pytest.raises(SystemExit, match="cannot read --config"):
        train.resolve_recipe(train.parse_args(["--data", "d", "--config", str(config)]))


def test_a_git_model_reference_is_the_folder_as_committed(tmp_path, monkeypatch):
    root = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(root)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout
    folder = train.model_folder(f"git:{head.strip()}:models")
    assert folder.is_relative_to(Path("runs/git-models"))
    committed = subprocess.run(["git", "show", f"{head.strip()}:models/config.json"], capture_output=True, check=True)
    assert (folder / "config.json").read_bytes() == committed.stdout
    assert (folder / "emotion_cnn.keras").stat().st_size > 100_000
    with pytest.raises(SystemExit, match="git has no"):
        train.model_folder(f"git:{head.strip()}:no/such/folder")
    with pytest.raises(SystemExit, match="git:REV:PATH"):
        train.model_folder("git:onlyrev")


def test_capture_augmentation_changes_faces_reproducibly():
    face = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 1), dtype=np.uint8)
    seed = np.array([7, 11])
    a, b = train.model_inputs(face, "equalize", seed), train.model_inputs(face, "equalize", seed)
    np.testing.assert_array_equal(a, b)
    plain = train.model_inputs(face, "equalize")
    assert a.shape == plain.shape == (3, 48, 48, 1) and not np.array_equal(a, plain)
    rng = np.random.default_rng(1)
    changed = [not np.array_equal(train.capture_augment(face[0, ..., 0], rng), face[0, ..., 0]) for _ in range(20)]
    assert sum(changed) >= 15  # most draws change the face (a few draw nothing at all)
