"""Shared pytest fixtures."""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

# --- The environment: tests and the apps they launch never inherit these from the developer's shell. ---

# The model the app loads and whether it may reach private cameras: a test that wants one sets it itself.
APP_ENV_VARIABLES = ("EMOTION_MODEL_REPO", "EMOTION_MODEL_REVISION", "EMOTION_ALLOW_PRIVATE_CAMERAS")


@pytest.fixture(scope="session", autouse=True)
def clean_app_environment() -> Iterator[None]:
    """Unset APP_ENV_VARIABLES for the whole session (before any other session fixture starts an app)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in APP_ENV_VARIABLES:
            patch.delenv(name, raising=False)
        yield


# --- Tools the tests run for real. Missing on a developer's machine, their tests skip; missing where the
# --- environment variable CI is set (.ci/run sets it), that is a failure: a CI run must not pass by skipping them.

FFMPEG = shutil.which("ffmpeg")
CHROMIUM = "/usr/bin/chromium"  # Debian's, which the browser tests drive (never one `playwright install` fetches)


def missing_tools() -> list[str]:
    """The tools CI installs (.ci/run) that this machine lacks."""
    tools = {
        "ffmpeg": FFMPEG is not None,
        "chromium": shutil.which(CHROMIUM) is not None,
        "playwright (Python package)": importlib.util.find_spec("playwright") is not None,
    }
    return [name for name, found in tools.items() if not found]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under CI, stop at once if a tool is missing (the browser tests' own skipif could not tell CI apart)."""
    if os.environ.get("CI") and (missing := missing_tools()):
        raise pytest.UsageError(f"CI is set, but these tools are missing: {', '.join(missing)}; the run needs them.")


def require_tool(name: str, path: str | None) -> str:
    """`path` of the tool `name`; if it was not found, skip the test, or fail it when CI is set."""
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed, and CI is set: the run needs it.", pytrace=False)
        pytest.skip(f"{name} is not installed")
    return path


# --- Camera streams: a real MJPEG server (ffmpeg) on loopback. Used by tests/test_camera.py. ---


def free_port() -> int:
    """A loopback TCP port that nothing listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    """Whether something listens on `port`, read from /proc so no client connection is spent:
    ffmpeg's -listen 1 server serves exactly one client."""
    try:
        table = Path("/proc/net/tcp").read_text()
    except OSError:
        return True  # cannot tell; the caller has already waited a little
    return any(f":{port:04X} " in line and line.split()[3] == "0A" for line in table.splitlines()[1:])


def serve_mjpeg(clip: Path, *output_args: str, loop: bool = True) -> tuple[subprocess.Popen, str]:
    """Run ffmpeg as a live MJPEG HTTP server for one client, playing `clip` in real time (looped or once)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/cam.mjpg"
    looping = ["-stream_loop", "-1"] if loop else []
    process = subprocess.Popen(
        [FFMPEG, "-v", "error", "-nostdin", "-re", *looping, "-i", str(clip), "-an", *output_args,
         "-f", "mpjpeg", "-listen", "1", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not _listening(port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError("ffmpeg MJPEG server did not start")
        time.sleep(0.05)
    return process, url


def wait_until_serving(process: subprocess.Popen, url: str, log_path: Path) -> None:
    """Wait for an app process to answer HTTP 200 at `url`; fail with the end of its log if it exits or takes longer
    than APP_START_TIMEOUT."""
    started = time.monotonic()
    while True:
        if process.poll() is not None:
            pytest.fail(f"app.py exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        if time.monotonic() - started > APP_START_TIMEOUT:
            pytest.fail(f"app.py was not ready after {APP_START_TIMEOUT} s:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)


def stop_process(process: subprocess.Popen, timeout: float = 5) -> None:
    """Terminate `process`, killing it if it has not exited after `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def camera_clip(tmp_path_factory) -> Path:
    """A 2 s, 320x240, 10 fps test-pattern clip (mpeg4 in mp4, an encoder every ffmpeg build has)."""
    require_tool("ffmpeg", FFMPEG)
    clip = tmp_path_factory.mktemp("camera") / "clip.mp4"
    subprocess.run(
        [FFMPEG, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=10", "-t", "2",
         "-c:v", "mpeg4", "-q:v", "5", str(clip)],
        check=True, timeout=30,
    )
    return clip


@pytest.fixture
def mjpeg_server(camera_clip):
    """Factory: start(clip=None, content_type=...) runs ffmpeg as a live MJPEG HTTP server looping
    `clip` (default: camera_clip) in real time, and returns its URL. It serves a single client.
    Every server is terminated at teardown."""
    processes = []

    def start(clip=None, content_type: str = "multipart/x-mixed-replace;boundary=ffmpeg") -> str:
        process, url = serve_mjpeg(clip or camera_clip, "-q:v", "5", "-content_type", content_type)
        processes.append(process)
        return url

    yield start
    for process in processes:
        stop_process(process)


# --- The app: `python app.py` launched ONCE per test session, shared by test_app_api.py, test_app_camera.py and
# --- test_browser.py; plus a real face video for its camera tabs.

APP_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = APP_ROOT / "test-artifacts"  # screenshots and measurements (git-ignored)
APP_START_TIMEOUT = 120  # seconds: generous, the 2 cores are shared with training runs
FACE_PHOTO = APP_ROOT / "examples" / "grace_hopper.jpg"
# 640x480, the still letterboxed, then a slow zoom in and out (every frame differs, as from a real camera).
FACE_VIDEO_FILTER = (
    "scale=640:480:force_original_aspect_ratio=decrease,pad=640:480:(ow-iw)/2:(oh-ih)/2,"
    "zoompan=z='1.08+0.08*sin(2*PI*on/{frames})':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)':d=1:s=640x480:fps={fps}"
)


@dataclass
class AppServer:
    url: str
    start_seconds: float  # from process start to the first HTTP 200
    log_path: Path


@pytest.fixture(scope="session")
def app_server(tmp_path_factory) -> Iterator[AppServer]:
    """`python app.py` on a free loopback port: offline (the Hub model's cache, else the bundled model), loopback
    cameras allowed. The model settings are never inherited: the default Hub-then-bundled path is what runs."""
    tmp = tmp_path_factory.mktemp("app")
    port = free_port()
    env = dict(
        {name: value for name, value in os.environ.items() if name not in APP_ENV_VARIABLES},
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        EMOTION_ALLOW_PRIVATE_CAMERAS="1",
        HF_HUB_OFFLINE="1",
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_EXAMPLES_CACHE=str(tmp / "cached_examples"),  # not the checkout's .gradio/
        GRADIO_TEMP_DIR=str(tmp / "gradio"),
    )
    url = f"http://127.0.0.1:{port}/"
    log_path = tmp / "app.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=APP_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(process, url, log_path)
        start_seconds = time.monotonic() - started
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "app_start.json").write_text(json.dumps({"start_to_http_200_s": round(start_seconds, 2)}, indent=2))
        yield AppServer(url, start_seconds, log_path)
    finally:
        stop_process(process, timeout=20)
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copyfile(log_path, ARTIFACTS / "app.log")


@pytest.fixture(scope="session")
def app_url(app_server) -> str:
    return app_server.url


def face_video(path: Path, frames: int, fps: int, *codec: str) -> Path:
    """Write a `frames`-long 640x480 video of a real face (examples/grace_hopper.jpg, slowly zooming) to `path`."""
    require_tool("ffmpeg", FFMPEG)
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-loop", "1", "-framerate", str(fps), "-i", str(FACE_PHOTO),
         "-vf", FACE_VIDEO_FILTER.format(frames=frames, fps=fps), "-frames:v", str(frames), *codec, str(path)],
        check=True, timeout=60,
    )
    return path


@pytest.fixture(scope="session")
def face_clip(tmp_path_factory) -> Path:
    """4 s of a real face at 10 frames/s, 640x480, as MJPEG in Matroska: ffmpeg serves it without re-encoding."""
    return face_video(tmp_path_factory.mktemp("face") / "face.mkv", 40, 10, "-c:v", "mjpeg", "-q:v", "5")


@pytest.fixture
def mjpeg_clip_server():
    """Factory: start(clip, loop) serves `clip` once (or looped) as a live MJPEG stream to one client; its URL.
    Unlike `mjpeg_server` it copies MJPEG frames as they are (no re-encoding), and it can let the stream end."""
    processes = []

    def start(clip: Path, loop: bool = False) -> str:
        process, url = serve_mjpeg(clip, "-c:v", "copy", loop=loop)
        processes.append(process)
        return url

    yield start
    for process in processes:
        stop_process(process)


# --- The process id of the `app_server` app, to sample its memory (VmRSS). Used by tests/test_load.py. ---


@pytest.fixture(scope="session")
def app_server_pid(app_server) -> int | None:
    """The pid of `app_server`'s `python app.py`: the child of this pytest process running app.py (None if not found)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
        if ppid == os.getpid() and b"app.py" in argv:
            return int(entry.name)
    return None


@pytest.fixture(scope="session")
def model_folder(tmp_path_factory):
    """The bundled model folder plus its float emotion_cnn.onnx, which models/ leaves out to stay under 10 MB (the
    app serves the INT8 graph; train.py writes both): exported here from the bundled .keras file, as train.py does."""
    import shutil

    from emotion import onnx_graph
    from emotion.model_store import BUNDLED_DIR, ONNX_FILENAME, load_model_dir

    folder = tmp_path_factory.mktemp("model")
    for path in BUNDLED_DIR.iterdir():
        if path.is_file():
            shutil.copy(path, folder / path.name)
    model, _ = load_model_dir(BUNDLED_DIR)
    faces = np.random.default_rng(0).random((64, 48, 48, 1), dtype=np.float32)
    onnx_graph.export(model, folder / ONNX_FILENAME, faces)
    return folder
