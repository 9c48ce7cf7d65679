"""The webcam tab's handler, called in this process: the stream's private endpoint cannot be called by clients
(test_browser.py drives it through a real browser). Imports app.py with the bundled model."""

import gc
import importlib
import math
import os
import time
from pathlib import Path

import cv2
import gradio as gr
import numpy as np
import pytest

FACE_PHOTO = Path(__file__).resolve().parent.parent / "examples" / "grace_hopper.jpg"

# Gradio's in-process helpers (this module drives app handlers directly) leave asyncio event loops to the garbage
# collector; when their ResourceWarning fires depends on GC timing, so here, and only here, it cannot be an error.
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """app.py imported here: bundled model, no Hub; its example cache in a temporary folder, not the checkout."""
    env = {
        "EMOTION_MODEL_REPO": "bundled",
        "GRADIO_EXAMPLES_CACHE": str(tmp_path_factory.mktemp("cached_examples")),
        "GRADIO_RESET_EXAMPLES_CACHE": "True",
        "GRADIO_TEMP_DIR": str(tmp_path_factory.mktemp("gradio")),  # app.py claims its cache folder in here
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield importlib.import_module("app")
        gc.collect()  # collect the event loops Gradio left here, under this module's ResourceWarning filter
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """A 640x480 RGB webcam-like frame with one real face."""
    photo = cv2.cvtColor(cv2.imread(str(FACE_PHOTO)), cv2.COLOR_BGR2RGB)  # 512x600
    photo = cv2.resize(photo, (410, 480), interpolation=cv2.INTER_AREA)
    return cv2.copyMakeBorder(photo, 0, 0, 115, 115, cv2.BORDER_CONSTANT)


def test_empty_frames_change_nothing(app):
    # The stream sends None while the camera starts or stops: no update, and no session is created.
    image, rate, session = app.annotate_webcam(None, None, 48, 0.0, 2)
    assert image == gr.skip() and rate == gr.skip() and session is None
    started = app.WebcamSession()
    assert app.annotate_webcam(None, started, 48, 0.0, 2)[2] is started


def test_frames_are_annotated_with_one_tracked_face_and_a_rate(app, frame):
    session, rates = None, []
    started = time.monotonic()
    while time.monotonic() - started < 1.5 or not rates:
        image, rate, session = app.annotate_webcam(frame, session, 48, 0.0, 2)
        assert image.shape == frame.shape and image.dtype == np.uint8
        if rate != gr.skip():
            rates.append(rate)
        assert time.monotonic() - started < 60
    assert not np.array_equal(image, frame)  # a box and its label were drawn
    assert len(session.tracker.tracks) == 1 and session.tracker.detect_every == 2
    assert rates[0].endswith("ms per frame)") and "frames/s" in rates[0]


def test_the_confidence_threshold_hides_unsure_faces(app, frame):
    # The highest threshold (1.0) hides a face unless the model is certain of it, which it is not of this one.
    assert max(face.confidence for face in app.recognizer.detect(frame, 48)) < 1.0
    image, _, session = app.annotate_webcam(frame, None, 48, 1.0, 1)
    assert np.array_equal(image, frame)
    assert len(session.tracker.tracks) == 1  # it was found and tracked, only not shown
    image, _, _ = app.annotate_webcam(frame, None, 48, 0.0, 1)
    assert not np.array_equal(image, frame)  # the same face with no threshold: shown


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ((48, 0.0, math.nan), "Detect faces every N frames: N must be a whole number from 1 to 10"),
        ((48, 0.0, 0), "Detect faces every N frames: N must be a whole number from 1 to 10"),
        ((48, 0.0, 2.5), "Detect faces every N frames: N must be a whole number from 1 to 10"),
        ((48, math.inf, 1), "The confidence threshold must be a number from 0 to 1"),
        ((48, 1.5, 1), "The confidence threshold must be a number from 0 to 1"),
        ((math.nan, 0.0, 1), "The minimum face size must be a number of pixels from 24 to 4096"),
    ],
)
def test_settings_out_of_range_get_a_clear_error(app, frame, settings, message):
    with pytest.raises(gr.Error, match=message):
        app.annotate_webcam(frame, None, *settings)
