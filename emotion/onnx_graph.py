"""A Keras classifier as an ONNX graph, rebuilt layer by layer from its weights, for ONNX Runtime.

`train.py` writes the graph beside the .keras file (`export`), checked against Keras, and the app serves that
.onnx file without TensorFlow. For the live path's batch of 2 (one face and its mirror) ONNX Runtime ran 2.4-3.1x
faster than TensorFlow on 2 CPU cores (README.md, Performance). Only the layers of `emotion.networks` convert;
anything else raises `UnsupportedModel` (training and evaluation then keep TensorFlow).
"""

from pathlib import Path

import keras
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from .classifier import onnx_session

OPSET = 17
CALIBRATION_FACES = 1024  # training faces whose activations set the INT8 model's ranges
MIN_INT8_AGREEMENT = 0.97  # share of faces whose top label the INT8 model must keep (the bundled model: 0.991)


class UnsupportedModel(ValueError):
    """The model holds a layer or setting this converter does not translate."""


def keras_to_onnx(model: keras.Model) -> bytes:
    """A serialized ONNX model computing what `model(x, training=False)` does for float32 NHWC input."""
    graph = _Graph()
    x = graph.transpose("input", (0, 3, 1, 2))  # Keras is channels-last; ONNX convolutions are channels-first
    spatial = True  # x is (N, C, H, W) until a pooling or flattening layer makes it (N, features)
    previous = None
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            previous = layer
            continue
        _check_chain(layer, previous, model)
        previous = layer
        if getattr(layer, "quantization_mode", None):
            raise UnsupportedModel(f"{layer.name}: quantized layers do not convert")
        if layer.get_config().get("data_format", "channels_last") != "channels_last":
            raise UnsupportedModel(f"{layer.name}: only channels_last layers convert")
        if isinstance(layer, keras.layers.Dropout):
            continue
        if isinstance(layer, keras.layers.Flatten) and spatial:
            x = graph.transpose(x, (0, 2, 3, 1))  # Keras flattens in HWC order
        x, spatial = _convert(graph, layer, x, spatial)
    if spatial:
        raise UnsupportedModel(f"{model.name}: the output is not a vector of probabilities")
    return graph.serialize(x, model.input_shape[1:], model.output_shape[-1])


def session(model: keras.Model, faces: np.ndarray | None = None) -> ort.InferenceSession:
    """An ONNX Runtime session for `model` (see `keras_to_onnx`), checked against Keras (`check`)."""
    runner = onnx_session(keras_to_onnx(model))
    check(runner, model, faces)
    return runner


def check(runner: ort.InferenceSession, model: keras.Model, faces: np.ndarray | None = None) -> float:
    """The largest absolute difference between the ONNX graph's and Keras's probabilities on `faces` (by default two
    random faces). Raises `UnsupportedModel` when it exceeds 1e-4: a layer setting the converter missed."""
    if faces is None:
        faces = np.random.default_rng(0).random((2, *model.input_shape[1:]), dtype=np.float32)
    faces = np.ascontiguousarray(faces, dtype=np.float32)
    expected = keras.ops.convert_to_numpy(model(faces, training=False)).astype(np.float32)
    got = runner.run(None, {"input": faces})[0]
    if got.shape != expected.shape:
        raise UnsupportedModel(f"{model.name}: the ONNX graph gives shape {got.shape}, Keras {expected.shape}")
    difference = float(np.abs(got - expected).max())
    if not difference <= 1e-4:
        raise UnsupportedModel(f"{model.name}: the ONNX graph disagrees with Keras on a test batch "
                               f"(max abs difference {difference:.2g})")
    return difference


def export(model: keras.Model, path: str | Path, faces: np.ndarray) -> float:
    """Write `model` as an ONNX file at `path`, checked against Keras on `faces` (real preprocessed faces; the first
    256), and return the largest absolute difference of their probabilities. Raises `UnsupportedModel` (writing
    nothing) when the model does not convert or disagrees."""
    graph = keras_to_onnx(model)
    difference = check(onnx_session(graph), model, faces[:256])
    Path(path).write_bytes(graph)
    return difference


def quantize(float_path: str | Path, int8_path: str | Path, calibration: np.ndarray, faces: np.ndarray,
             min_agreement: float | None = None) -> float:
    """Write an INT8 copy of the ONNX model at `float_path` (static quantization: QDQ, per-channel weights,
    activation ranges calibrated on up to CALIBRATION_FACES of the `calibration` faces, training faces) and return
    the share of `faces` (validation faces) whose top label it keeps. Raises `UnsupportedModel` (writing nothing)
    below `min_agreement` (default MIN_INT8_AGREEMENT).

    INT8 convolutions ran 4-6x faster than float32 here (README, Performance); calibrated on training faces, the
    bundled model scored the same on FER2013 validation faces (0.7105 against 0.7099).
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    min_agreement = MIN_INT8_AGREEMENT if min_agreement is None else min_agreement
    faces = np.ascontiguousarray(faces, dtype=np.float32)
    calibration = np.asarray(calibration, dtype=np.float32)
    chosen = np.random.default_rng(0).permutation(len(calibration))[:CALIBRATION_FACES]
    batches = iter([{"input": calibration[np.sort(chosen[i : i + 64])]} for i in range(0, len(chosen), 64)])

    class Batches(CalibrationDataReader):
        def get_next(self) -> dict | None:
            return next(batches, None)

    int8_path = Path(int8_path)
    prepared = int8_path.with_name(int8_path.name + ".prepared")
    try:
        quant_pre_process(str(float_path), str(prepared))
        quantize_static(str(prepared), str(int8_path), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        prepared.unlink(missing_ok=True)
    full, small = onnx_session(float_path), onnx_session(int8_path)
    batches = np.array_split(faces, max(1, len(faces) // 256))
    agreement = float(np.concatenate([
        full.run(None, {"input": batch})[0].argmax(1) == small.run(None, {"input": batch})[0].argmax(1)
        for batch in batches
    ]).mean())
    if not agreement >= min_agreement:
        int8_path.unlink()
        raise UnsupportedModel(f"the INT8 model keeps the top label of only {agreement:.1%} of the faces "
                               f"(at least {min_agreement:.0%} wanted)")
    return agreement


def _check_chain(layer: keras.layers.Layer, previous: keras.layers.Layer | None, model: keras.Model) -> None:
    """The converter walks `model.layers` in order, so each layer must read only the previous layer's output
    (always so in a `Sequential`; a functional model could branch or share a layer)."""
    if isinstance(model, keras.Sequential):
        return
    nodes = layer._inbound_nodes
    parents = [t._keras_history.operation for t in nodes[0].input_tensors] if len(nodes) == 1 else []
    if previous is None or parents != [previous]:
        raise UnsupportedModel(f"{layer.name}: only a plain chain of layers converts")


def _convert(graph: "_Graph", layer: keras.layers.Layer, x: str, spatial: bool) -> tuple[str, bool]:
    """Append `layer` to the graph; returns its output and whether it is still (N, C, H, W)."""
    config = layer.get_config()
    if isinstance(layer, keras.layers.Conv2D) and spatial:
        if tuple(config["strides"]) != (1, 1) or tuple(config["dilation_rate"]) != (1, 1) or config["groups"] != 1:
            raise UnsupportedModel(f"{layer.name}: only stride-1, undilated, ungrouped convolutions convert")
        kernel = layer.kernel.numpy()  # (kh, kw, in, out)
        height, width = kernel.shape[:2]
        if config["padding"] == "same":
            if height % 2 == 0 or width % 2 == 0:
                raise UnsupportedModel(f"{layer.name}: 'same' padding converts for odd kernels only")
            pads = [height // 2, width // 2, height // 2, width // 2]
        else:
            pads = [0, 0, 0, 0]
        inputs = [x, graph.constant(kernel.transpose(3, 2, 0, 1))]
        if layer.use_bias:
            inputs.append(graph.constant(layer.bias.numpy()))
        x = graph.node("Conv", inputs, kernel_shape=[height, width], pads=pads)
        return _activation(graph, layer, config["activation"], x, spatial), spatial
    if isinstance(layer, keras.layers.BatchNormalization) and spatial:
        if config["axis"] not in (-1, 3, [3], [-1]):
            raise UnsupportedModel(f"{layer.name}: only channel-axis batch normalization converts")
        mean, var = layer.moving_mean.numpy(), layer.moving_variance.numpy()
        gamma = layer.gamma.numpy() if layer.scale else np.ones_like(mean)
        beta = layer.beta.numpy() if layer.center else np.zeros_like(mean)
        x = graph.node("BatchNormalization", [x] + [graph.constant(v) for v in (gamma, beta, mean, var)],
                       epsilon=float(config["epsilon"]))
        return x, spatial
    if isinstance(layer, keras.layers.ReLU):
        if config.get("max_value") is not None or config.get("negative_slope") or config.get("threshold"):
            raise UnsupportedModel(f"{layer.name}: only a plain ReLU converts")
        return graph.node("Relu", [x]), spatial
    if isinstance(layer, keras.layers.Activation):
        return _activation(graph, layer, config["activation"], x, spatial), spatial
    if isinstance(layer, keras.layers.MaxPooling2D) and spatial:
        if config["padding"] != "valid":
            raise UnsupportedModel(f"{layer.name}: only 'valid' max pooling converts")
        pool = list(config["pool_size"])
        strides = list(config["strides"] or pool)
        return graph.node("MaxPool", [x], kernel_shape=pool, strides=strides), spatial
    if isinstance(layer, keras.layers.GlobalAveragePooling2D) and spatial:
        if config.get("keepdims"):
            raise UnsupportedModel(f"{layer.name}: keepdims does not convert")
        return graph.node("Flatten", [graph.node("GlobalAveragePool", [x])]), False
    if isinstance(layer, keras.layers.Flatten):
        return graph.node("Flatten", [x]), False
    if isinstance(layer, keras.layers.Dense) and not spatial:
        inputs = [x, graph.constant(layer.kernel.numpy())]
        inputs.append(graph.constant(layer.bias.numpy() if layer.use_bias else np.zeros(layer.units, np.float32)))
        return _activation(graph, layer, config["activation"], graph.node("Gemm", inputs), spatial), spatial
    where = "on a feature map" if spatial else "on a vector"
    raise UnsupportedModel(f"{layer.name}: {type(layer).__name__} layers do not convert {where}")


def _activation(graph: "_Graph", layer: keras.layers.Layer, activation: str, x: str, spatial: bool) -> str:
    if activation == "linear":
        return x
    if activation == "relu":
        return graph.node("Relu", [x])
    if activation == "softmax" and not spatial:
        return graph.node("Softmax", [x], axis=-1)
    raise UnsupportedModel(f"{layer.name}: activation {activation!r} does not convert here")


class _Graph:
    """Collects ONNX nodes and weights under generated names."""

    def __init__(self):
        self.nodes, self.initializers = [], []

    def _name(self, kind: str) -> str:
        return f"{kind}_{len(self.nodes) + len(self.initializers)}"

    def constant(self, value: np.ndarray) -> str:
        name = self._name("w")
        self.initializers.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attributes) -> str:
        output = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    def transpose(self, x: str, perm: tuple[int, ...]) -> str:
        return self.node("Transpose", [x], perm=list(perm))

    def serialize(self, output: str, input_shape: tuple, output_size: int) -> bytes:
        self.nodes.append(helper.make_node("Identity", [output], ["probabilities"]))
        graph = helper.make_graph(
            self.nodes, "emotion_classifier",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *input_shape])],
            [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", output_size])],
            self.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        onnx.checker.check_model(model)
        return model.SerializeToString()
