"""Model architectures. Each builder returns an uncompiled Keras model: (48, 48, 1) in, 7 softmax probabilities out."""

import keras
from keras import layers

from .labels import LABELS
from .preprocess import INPUT_SIZE


def build_seed(num_classes: int = len(LABELS), dropout: float = 0.25) -> keras.Model:
    """The seed report's CNN, reproduced as written: a `Sequential` of 5 conv blocks and 2 dense blocks."""
    model = keras.Sequential(name="seed_cnn")
    model.add(keras.Input((INPUT_SIZE, INPUT_SIZE, 1)))
    for filters in (64, 128, 256, 512, 512):
        model.add(layers.Conv2D(filters, 3, padding="same"))
        model.add(layers.BatchNormalization())
        model.add(layers.Activation("relu"))
        model.add(layers.MaxPooling2D(2))  # 48 -> 24 -> 12 -> 6 -> 3 -> 1
        model.add(layers.Dropout(dropout))
    model.add(layers.Flatten())
    for _ in range(2):
        model.add(layers.Dense(512))
        model.add(layers.Activation("relu"))
        model.add(layers.Dropout(dropout))
    model.add(layers.Dense(num_classes, activation="softmax", dtype="float32"))
    return model


def build_vgg(
    num_classes: int = len(LABELS), widths: tuple[int, ...] = (32, 64, 128, 256), dropout: float = 0.3
) -> keras.Model:
    """A VGG-style trunk: per stage 2 x (Conv 3x3 -> BN -> ReLU) then max-pool; global average pooling head."""
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 1), name="face")
    x = inputs
    for stage, width in enumerate(widths, start=1):
        for conv in (1, 2):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"s{stage}_conv{conv}")(x)
            x = layers.BatchNormalization(name=f"s{stage}_bn{conv}")(x)
            x = layers.ReLU(name=f"s{stage}_relu{conv}")(x)
        x = layers.MaxPooling2D(2, name=f"s{stage}_pool")(x)  # 4 stages: 48 -> 24 -> 12 -> 6 -> 3
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="vgg_cnn")


ARCHITECTURES = {"seed": build_seed, "vgg": build_vgg}


def build_model(arch: str, num_classes: int = len(LABELS), widths: list[int] | None = None) -> keras.Model:
    """Build the named architecture (one of `ARCHITECTURES`); `widths` sets the VGG trunk's filters per stage."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    if widths is None:
        return ARCHITECTURES[arch](num_classes)
    if arch != "vgg":
        raise ValueError(f"widths apply to the vgg trunk only, not {arch!r}")
    return build_vgg(num_classes, widths=tuple(widths))
