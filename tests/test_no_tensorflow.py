"""The app serves without TensorFlow: `python app.py` never imports it (nor Keras), and stays small.

The app runs in its own process under `python -X importtime`, which logs every module the process imports, at
start-up or later during a request, to stderr. After real /predict requests, the log and the process's memory
map (/proc/PID/maps: TensorFlow's native libraries) must show no TensorFlow, and its resident memory is read.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from conftest import APP_ENV_VARIABLES, APP_ROOT, ARTIFACTS, free_port, stop_process, wait_until_serving

FORBIDDEN = ("tensorflow", "keras", "tf_keras", "tensorboard")
SERVING_RSS_MB = 400  # issue 17: the serving process after its first requests


def imported_modules(importtime_log: str) -> set[str]:
    """Module names from `python -X importtime` lines: "import time: <self us> | <cumulative us> | <indented name>"."""
    names = set()
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip())
    names.discard("package")  # the header line's column title
    return names


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@pytest.fixture(scope="module")
def served_app(tmp_path_factory):
    """`python -X importtime app.py` after a few /predict requests: (its import log, memory map, RSS in MB)."""
    tmp = tmp_path_factory.mktemp("no_tf")
    port = free_port()
    env = dict(
        {name: value for name, value in os.environ.items() if name not in APP_ENV_VARIABLES},
        GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), HF_HUB_OFFLINE="1",
        GRADIO_ANALYTICS_ENABLED="False", GRADIO_EXAMPLES_CACHE=str(tmp / "examples"), GRADIO_TEMP_DIR=str(tmp / "tmp"),
    )
    url = f"http://127.0.0.1:{port}/"
    log_path = tmp / "app.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-X", "importtime", "app.py"], cwd=APP_ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(process, url, log_path)
        client = Client(url, verbose=False, download_files=str(tmp / "client"), analytics_enabled=False)
        for name in ("grace_hopper.jpg", "group_three_women.jpg", "composite_four_faces.jpg"):
            annotated, _, faces = client.predict(handle_file(str(APP_ROOT / "examples" / name)), api_name="/predict")
            assert Path(annotated).is_file() and faces, f"{name}: no face answered"
        maps = Path(f"/proc/{process.pid}/maps").read_text()
        rss = resident_mb(process.pid)
    finally:
        stop_process(process, timeout=20)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "no_tensorflow_app.log").write_text(log_path.read_text())
    return log_path.read_text(), maps, rss


def test_the_app_process_never_imports_tensorflow(served_app):
    log, maps, _ = served_app
    modules = imported_modules(log)
    # The log is a complete record: it holds the serving path itself.
    assert {"emotion.recognizer", "emotion.classifier", "onnxruntime", "gradio", "cv2"} <= modules
    assert not sorted(m for m in modules if m.split(".")[0] in FORBIDDEN)
    assert "/tensorflow/" not in maps and "libtensorflow" not in maps
    assert "/onnxruntime/" in maps  # the map lists the libraries the classifier runs on


def test_the_serving_process_stays_small(served_app):
    _, _, rss = served_app
    assert rss < SERVING_RSS_MB, f"app.py holds {rss:.0f} MB after its first requests"


def test_the_import_log_parser_sees_tensorflow_when_it_is_imported():
    # The check above could pass by parsing nothing: the same parsing on a process that imports Keras finds it.
    log = subprocess.run([sys.executable, "-X", "importtime", "-c", "import keras"], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300).stderr
    assert {"keras", "tensorflow"} <= {m.split(".")[0] for m in imported_modules(log)}
