import logging
import shutil
import time

import keras
import numpy as np
import pytest
from huggingface_hub import constants

from emotion import model_store
from emotion.classifier import Classifier
from emotion.model_store import BUNDLED_DIR, CONFIG_FILENAME, INT8_FILENAME, MODEL_FILENAME, ONNX_FILENAME
from emotion.networks import build_model
from fakedata import chain, with_trained_statistics


def test_bundled_model_loads_with_its_config():
    loaded = model_store.load(repo_id="bundled")
    assert loaded.source.startswith("bundled:")
    assert loaded.classifier().runtime == "onnx" and loaded.served == INT8_FILENAME
    assert loaded.model.output_shape == (None, 7)  # the Keras model too, on demand (training and evaluation)
    assert loaded.config["labels"][3] == "happy"


def test_unreachable_hub_falls_back_fast_and_says_so(caplog, monkeypatch):
    # A Hub endpoint nobody listens on: the quick reachability check spares huggingface_hub's retry loop.
    monkeypatch.setattr(constants, "ENDPOINT", "https://127.0.0.1")
    started = time.time()
    with caplog.at_level(logging.INFO, logger="emotion.model_store"):
        loaded = model_store.load(repo_id="someone/missing-model", revision="v9")
    assert loaded.source.startswith("bundled:")
    assert time.time() - started < 15
    assert "falling back to the bundled model" in caplog.text
    assert "Using the bundled model" in caplog.text


def test_offline_mode_falls_back(monkeypatch, caplog):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with caplog.at_level(logging.WARNING, logger="emotion.model_store"):
        assert model_store.load(repo_id="someone/model").source.startswith("bundled:")
    assert "someone/model@v1" in caplog.text


def fill_hub_cache(source, cache, repo_id, revision, files=(MODEL_FILENAME, ONNX_FILENAME, INT8_FILENAME), broken=None):
    """Lay out a real huggingface_hub cache entry of the model folder `source`, as a past download would have left it
    (`broken`: that file cut short, as a partial download leaves it)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in (CONFIG_FILENAME, *files):
        data = (source / name).read_bytes()
        (snapshot / name).write_bytes(data[:1000] if name == broken else data)
    (repo / "refs").mkdir()
    (repo / "refs" / revision).write_text(commit)


def test_offline_start_uses_the_cached_download(model_folder, tmp_path, monkeypatch):
    fill_hub_cache(model_folder, tmp_path, "org/emotion", "v1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    loaded = model_store.load(repo_id="org/emotion", revision="v1")
    assert loaded.source == "hub-cache:org/emotion@v1" and loaded.served == INT8_FILENAME
    assert loaded.classifier().runtime == "onnx"
    assert loaded.model.output_shape == (None, 7)


def test_a_revision_without_int8_file_serves_the_float_graph(model_folder, tmp_path, monkeypatch):
    fill_hub_cache(model_folder, tmp_path, "org/emotion", "v1", files=(ONNX_FILENAME,))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    loaded = model_store.load(repo_id="org/emotion", revision="v1")
    assert loaded.served == ONNX_FILENAME and loaded.classifier().runtime == "onnx"


def test_a_revision_published_without_onnx_file_runs_its_keras_file(model_folder, tmp_path, monkeypatch, caplog):
    fill_hub_cache(model_folder, tmp_path, "org/emotion", "v0", files=(MODEL_FILENAME,))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with caplog.at_level(logging.WARNING, logger="emotion.model_store"):
        loaded = model_store.load(repo_id="org/emotion", revision="v0")
    assert loaded.source == "hub-cache:org/emotion@v0" and loaded.session is None
    assert loaded.classifier().runtime == "onnx"  # converted in memory from the Keras model
    assert f"has no {ONNX_FILENAME}" in caplog.text


@pytest.mark.parametrize("broken", [INT8_FILENAME, ONNX_FILENAME, MODEL_FILENAME])
def test_corrupt_cached_model_falls_back(model_folder, tmp_path, monkeypatch, caplog, broken):
    files = (broken,)
    fill_hub_cache(model_folder, tmp_path / "cache", "org/emotion", "v1", files=files, broken=broken)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with caplog.at_level(logging.WARNING, logger="emotion.model_store"):
        loaded = model_store.load(repo_id="org/emotion", revision="v1")
    assert loaded.source.startswith("bundled:")
    assert "falling back to the bundled model" in caplog.text
    assert "nothing is cached" not in caplog.text  # the reason given is the broken file, not the network


def test_without_fallback_the_error_is_raised(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(Exception, match="(?i)cache|local"):
        model_store.load(repo_id="someone/model", fallback=False)


def test_online_path_downloads_the_pinned_revision(tmp_path, monkeypatch):
    # The Hub's servers cannot run here: stand in for hf_hub_download and the reachability check only.
    calls = []

    def fake_download(repo_id, filename, revision, local_files_only):
        calls.append((repo_id, filename, revision, local_files_only))
        target = tmp_path / filename
        shutil.copy(BUNDLED_DIR / filename, target)
        return str(target)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(model_store, "_hub_reachable", lambda timeout=2.0: True)
    monkeypatch.setenv("EMOTION_MODEL_REPO", "org/emotion")
    monkeypatch.setenv("EMOTION_MODEL_REVISION", "abc123")
    loaded = model_store.load()
    assert loaded.source == "hub:org/emotion@abc123"
    assert [c[1] for c in calls] == [CONFIG_FILENAME, INT8_FILENAME]  # serving needs only the INT8 graph
    assert all(c[0] == "org/emotion" and c[2] == "abc123" and not c[3] for c in calls)
    assert loaded.model.output_shape == (None, 7)  # asked for, the Keras model is fetched from the same revision
    assert [c[1] for c in calls] == [CONFIG_FILENAME, INT8_FILENAME, MODEL_FILENAME]


def test_a_local_model_folder_can_be_named(tmp_path):
    assert model_store.load(repo_id=str(BUNDLED_DIR)).source.startswith("local:")


def test_unsafe_lambda_layers_are_refused(tmp_path):
    inputs = keras.Input((48, 48, 1))
    outputs = keras.layers.Dense(7)(keras.layers.Flatten()(keras.layers.Lambda(lambda x: x * 2)(inputs)))
    keras.Model(inputs, outputs).save(tmp_path / MODEL_FILENAME)
    shutil.copy(BUNDLED_DIR / CONFIG_FILENAME, tmp_path / CONFIG_FILENAME)
    with pytest.raises(ValueError, match="(?i)unsafe|lambda|safe_mode"):
        model_store.load_model_dir(tmp_path)


def test_export_writes_onnx_files_that_serve_like_keras(tmp_path, caplog):
    model = with_trained_statistics(build_model("vgg", widths=[8, 8, 8, 8]))
    faces = np.random.default_rng(0).random((64, 48, 48, 1), dtype=np.float32)
    model.save(tmp_path / MODEL_FILENAME)
    shutil.copy(BUNDLED_DIR / CONFIG_FILENAME, tmp_path / CONFIG_FILENAME)
    with caplog.at_level(logging.INFO, logger="emotion.model_store"):
        report = model_store.export_onnx(model, tmp_path, faces[:32], calibration=faces[32:])
    assert 0 <= report["onnx_max_abs_difference"] < 1e-4 and "differ by at most" in caplog.text
    assert report["int8_top_label_agreement"] >= 0.97 and "keeps the float graph's top label" in caplog.text
    loaded = model_store.load(repo_id=str(tmp_path))
    served = loaded.classifier()
    assert loaded.served == INT8_FILENAME and served.model is None
    reference = Classifier.from_config(model, model_store.read_config(tmp_path))
    assert (served.predict(faces).argmax(1) == reference.predict(faces).argmax(1)).mean() >= 0.9
    exact = Classifier.from_config(tmp_path / ONNX_FILENAME, model_store.read_config(tmp_path))
    np.testing.assert_allclose(exact.predict(faces), reference.predict(faces), atol=1e-5)


def test_an_int8_graph_that_changes_answers_is_not_written(tmp_path, caplog, monkeypatch):
    from emotion import onnx_graph

    model = with_trained_statistics(build_model("vgg", widths=[8, 8, 8, 8]))
    faces = np.random.default_rng(0).random((32, 48, 48, 1), dtype=np.float32)
    monkeypatch.setattr(onnx_graph, "MIN_INT8_AGREEMENT", 1.01)  # no quantized graph can keep more than all
    with caplog.at_level(logging.WARNING, logger="emotion.model_store"):
        report = model_store.export_onnx(model, tmp_path, faces, calibration=faces)
    assert report["int8_top_label_agreement"] is None and report["onnx_max_abs_difference"] is not None
    assert not (tmp_path / INT8_FILENAME).exists() and (tmp_path / ONNX_FILENAME).exists()
    assert f"Not writing {INT8_FILENAME}" in caplog.text


def test_a_model_that_cannot_be_exported_is_reported_and_leaves_no_onnx_file(tmp_path, caplog):
    for name in (ONNX_FILENAME, INT8_FILENAME):
        (tmp_path / name).write_bytes(b"an earlier model's graph")
    unusual = chain(keras.layers.LayerNormalization(name="layer_norm"), keras.layers.Flatten(), keras.layers.Dense(7))
    faces = np.zeros((2, 48, 48, 1), np.float32)
    with caplog.at_level(logging.WARNING, logger="emotion.model_store"):
        report = model_store.export_onnx(unusual, tmp_path, faces, calibration=faces)
    assert report == {"onnx_max_abs_difference": None, "int8_top_label_agreement": None}
    assert not (tmp_path / ONNX_FILENAME).exists() and not (tmp_path / INT8_FILENAME).exists()
    assert "Could not export the model to ONNX" in caplog.text and "layer_norm" in caplog.text
