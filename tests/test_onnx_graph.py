import keras
import numpy as np
import pytest

from emotion import onnx_graph
from emotion.model_store import load
from emotion.networks import build_model
from fakedata import chain, with_trained_statistics


def faces(n, seed=0):
    return np.random.default_rng(seed).random((n, 48, 48, 1), dtype=np.float32)


@pytest.mark.parametrize("name", ["bundled", "seed", "narrow vgg"])
def test_the_onnx_graph_computes_what_keras_does(name):
    model = {
        "bundled": lambda: load(repo_id="bundled").model,
        "seed": lambda: with_trained_statistics(build_model("seed")),
        "narrow vgg": lambda: with_trained_statistics(build_model("vgg", widths=[8, 16, 24, 40])),
    }[name]()
    x = faces(16)
    expected = model.predict(x, verbose=0)
    got = onnx_graph.session(model).run(None, {"input": x})[0]
    assert got.shape == (16, 7)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_flattening_keeps_keras_order_and_pooling_its_strides():
    # Logits, not probabilities, and a flattened 11x11 map: a wrong element order or pooling size would show.
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Conv2D(6, 3, padding="valid", activation="relu")(inputs)  # with a bias
    x = keras.layers.MaxPooling2D(pool_size=3, strides=2)(x)  # 46 -> 22
    x = keras.layers.MaxPooling2D(pool_size=2)(x)  # 22 -> 11
    x = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, keras.layers.Dense(7, use_bias=False)(x))
    x = faces(8, seed=3)
    np.testing.assert_allclose(onnx_graph.session(model).run(None, {"input": x})[0], model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, model", [
    ("strided", lambda: chain(keras.layers.Conv2D(4, 3, strides=2, name="strided"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(7))),
    ("layer_norm", lambda: chain(keras.layers.LayerNormalization(name="layer_norm"), keras.layers.Flatten(),
                                 keras.layers.Dense(7))),
    ("channels_first", lambda: chain(keras.layers.Conv2D(4, 1, data_format="channels_first", name="channels_first"))),
    ("map_softmax", lambda: chain(keras.layers.Conv2D(4, 3, activation="softmax", name="map_softmax"),
                                  keras.layers.Flatten(), keras.layers.Dense(7))),
    ("gelu", lambda: chain(keras.layers.Flatten(), keras.layers.Dense(7, activation="gelu", name="gelu"))),
    ("no_vector", lambda: chain(keras.layers.Conv2D(7, 3, name="conv"))),
    ("dense_on_map", lambda: chain(keras.layers.Conv2D(4, 3), keras.layers.Dense(7, name="dense_on_map"))),
    ("keepdims", lambda: chain(keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D(keepdims=True, name="keepdims"))),
])
def test_a_model_it_cannot_translate_is_refused_by_name(name, model):
    with pytest.raises(onnx_graph.UnsupportedModel, match=name if name != "no_vector" else "not a vector"):
        onnx_graph.keras_to_onnx(model())


def test_a_shared_layer_is_refused():
    shared = keras.layers.Conv2D(1, 3, padding="same", name="shared")
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.GlobalAveragePooling2D()(shared(shared(inputs)))
    with pytest.raises(onnx_graph.UnsupportedModel, match="plain chain"):
        onnx_graph.keras_to_onnx(keras.Model(inputs, keras.layers.Dense(7)(x)))


def test_a_graph_that_disagrees_with_keras_is_refused(monkeypatch):
    model, other = build_model("vgg", widths=[8, 8, 8, 8]), build_model("vgg", widths=[8, 8, 8, 8])
    other_graph = onnx_graph.keras_to_onnx(other)  # same shapes, other random weights: a silent mistranslation
    monkeypatch.setattr(onnx_graph, "keras_to_onnx", lambda _: other_graph)
    with pytest.raises(onnx_graph.UnsupportedModel, match="disagrees"):
        onnx_graph.session(model)
