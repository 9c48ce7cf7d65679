"""Facial emotion recognition: the Gradio app. It only wires the UI to the `emotion` package.

    python app.py    # http://127.0.0.1:7860; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT change where it listens

Tabs: Image (upload or paste a photo), Video (a file: each face's emotions over time), Webcam (live, in the browser)
and IP camera (an MJPEG stream, a snapshot URL polled, or rtsp://). The API has two public endpoints: /predict (image
in; annotated image, the probabilities of the most prominent face, and every face found out) and /analyze_video
(video in; annotated video, CSV, timeline plot and per-face summary out).
"""

import atexit
import fcntl
import functools
import logging
import math
import shutil
import numbers
import os
import signal
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio import processing_utils
from gradio.utils import get_upload_folder
from gradio_client.utils import is_http_url_like
from PIL import Image

from emotion import LABELS, EmotionRecognizer
from emotion.camera import CameraError, iter_camera_frames, redact_url
from emotion.data import IMAGE_SUFFIXES
from emotion.detect import DEFAULT_MIN_FACE, SMALLEST_FACE
from emotion.analyze import analyze_image, in_source_pixels
from emotion.images import ImageError, return_big_buffers_to_the_os
from emotion.plots import plot_timeline
from emotion.tracking import FaceTracker, TrackedFace
from emotion.video import (
    DEFAULT_RATE, MAX_BYTES, MAX_DURATION_S, NO_FACES, VIDEO_SUFFIXES, Timeline, VideoError, analyze_video,
    annotate_tracked,
)

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("app")


def claim_cache_folder() -> Path:
    """This run's own folder for Gradio's cache (uploads and outputs), deleted when the app exits; the folders
    that earlier runs left behind (killed, or stopped before Gradio's delete_cache came round) are deleted first.

    Each run holds a lock on its `run-*.lock` file until its process ends, even by SIGKILL: a folder whose lock
    can be taken belongs to no running app. Apps sharing GRADIO_TEMP_DIR keep their own folders.
    """
    base = Path(get_upload_folder()) / "facial-emotion"
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "cleanup.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # one app at a time cleans up and claims its folder
        for lock in base.glob("run-*.lock"):
            with open(lock, "a") as other:
                try:
                    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its app is running
                shutil.rmtree(lock.with_suffix(""), ignore_errors=True)
                lock.unlink()
        for folder in base.glob("run-*"):
            if folder.is_dir() and not folder.with_suffix(".lock").exists():  # its lock went, the folder stayed
                shutil.rmtree(folder, ignore_errors=True)
        descriptor, lock_name = tempfile.mkstemp(prefix="run-", suffix=".lock", dir=base)
        fcntl.flock(descriptor, fcntl.LOCK_EX)  # held, the descriptor left open, for the life of the process
        folder = Path(lock_name).with_suffix("")
        folder.mkdir()
    atexit.register(remove_cache_folder, folder, Path(lock_name))
    return folder


def remove_cache_folder(folder: Path, lock: Path) -> None:
    """Delete this run's cache folder and lock file (at exit)."""
    shutil.rmtree(folder, ignore_errors=True)
    lock.unlink(missing_ok=True)


# Before any Block exists: Gradio reads its cache folder (GRADIO_TEMP_DIR) when a Block is made.
os.environ["GRADIO_TEMP_DIR"] = str(claim_cache_folder())
return_big_buffers_to_the_os()  # decoded photos' memory goes back at once, not kept per worker thread


def save_image_atomically(image: Image.Image, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """Gradio's `processing_utils.save_pil_to_cache`, but the file is written aside and renamed into place.

    Gradio 6.31 names an output image by the hash of its bytes and rewrites that file in place, so when two
    requests return the same image at once (one photo sent twice, a still webcam scene) a download can catch it
    truncated and arrive empty: 9 of 120 identical concurrent /predict calls failed that way, none with this.
    A file already in the cache is complete (it was renamed into place whole), so it is only touched.
    """
    data = processing_utils.encode_pil_to_bytes(image, format)
    path = Path(cache_dir) / processing_utils.hash_bytes(data) / f"{name}.{format}"
    try:
        os.utime(path)  # handed out again: restart its delete_cache age (Gradio's clean-up reads the ctime)
    except FileNotFoundError:  # new, or the scheduled cache clean-up deleted it a moment ago: (re)write it
        _write_atomically(path, data)
    return str(path.resolve())


def _write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it into place: readers never see it partial."""
    for attempt in range(3):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.")
        except FileNotFoundError:  # the folder was removed between mkdir and mkstemp: make it again
            if attempt == 2:
                raise
            continue
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.replace(staging, path)
            return
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise


# The fix replaces a Gradio internal, so it is applied only to the versions it was checked against: their
# save_pil_to_cache has this signature and this in-place write. Another version runs Gradio's own code (a warning).
ATOMIC_CACHE_GRADIO_VERSIONS = {"6.31.0"}
if gr.__version__ in ATOMIC_CACHE_GRADIO_VERSIONS:
    processing_utils.save_pil_to_cache = save_image_atomically
else:
    log.warning(
        "Gradio %s is not one of %s: its save_pil_to_cache is left as it is, so identical concurrent images may "
        "arrive truncated; check app.save_image_atomically against this version.",
        gr.__version__, sorted(ATOMIC_CACHE_GRADIO_VERSIONS),
    )

recognizer = EmotionRecognizer.load()  # once per process, never per request; logs which model it used
log.info("Model: %s", recognizer.source)

# Examples are cached at their first click. The cache outlives the process but belongs to one model: start afresh.
os.environ.setdefault("GRADIO_RESET_EXAMPLES_CACHE", "True")
EXAMPLES = sorted(
    str(path)
    for path in (Path(__file__).resolve().parent / "examples").iterdir()
    if path.suffix.lower() in IMAGE_SUFFIXES
)
ANNOTATE_MIN_SIDE = 480  # small uploads are enlarged before drawing, so that the labels stay legible
WEBCAM_EVERY = 0.04  # seconds between frames the browser sends: up to 25 frames/s, newest frame wins
WEBCAM_SIZE = {"width": {"ideal": 640}, "height": {"ideal": 480}}  # frame size is the first lever on speed
WEBCAM_TIME_LIMIT = 300  # seconds a webcam session may hold one of the worker slots before it must restart
FPS_WINDOW = 1.0  # seconds over which the shown frame rate is measured
MAX_MIN_FACE = 4096  # pixels: /predict callers may go past the slider's 400, but not absurdly (it is a face size)
MAX_DETECT_EVERY = 10  # the webcam's "detect faces every N frames" slider goes from 1 to this
MAX_FRAME_SKIP = 10  # the IP camera's frame skip slider goes from 0 to this
CAMERA_DURATION_S = (5, 600)  # the IP camera's maximum duration slider (emotion.camera ends any stream at 600 s)
# Camera streams run at most 2 at a time, outside Gradio's queue: a Start beyond that is told at once that the
# cameras are busy, rather than waiting in the queue that photos share (18 waiting streams once locked out every
# photo). A second Start in the same session waits this long for the session's first stream to hand over its slot.
CAMERA_SLOTS = threading.BoundedSemaphore(2)
CAMERA_HANDOVER_S = 15.0
CAMERAS_BUSY = (
    "Two camera streams are already running, the most this app serves at once. Try again when one of them ends."
)
# Videos likewise: 1 analysed at a time and at most 2 waiting for it, outside Gradio's queue (videos waiting there
# would lock photos out as long as they take); beyond that a visitor is told at once.
VIDEO_RUNNING = threading.Semaphore(1)
VIDEO_ADMITTED = threading.BoundedSemaphore(3)
VIDEOS_BUSY = "Other videos are being analysed, as many as this app takes at once. Try again in a few minutes."
REMOTE_FILE = "Send the file itself: this app does not download files from URLs."
MAX_UPLOAD_BYTES = MAX_BYTES  # per file, for photos and the Video tab's videos (its limit is the larger)
UPLOAD_LIMIT = f"files up to {MAX_UPLOAD_BYTES // 1024**2} MB"
FAILED_SUMMARY = "**No result.** This image could not be analysed."
# The webcam and IP-camera tabs keep their faces' latest rows (about 12 MB): 13 minutes of one face at 25 frames/s.
LIVE_TIMELINE_ROWS = 20_000
MAX_RATE = 30.0  # frames analysed per second, at most (a video's own rate caps it too)
VIDEO_LIMITS = (
    f"Videos up to {MAX_DURATION_S / 60:.0f} minutes and {MAX_BYTES // 1024**2} MB "
    f"({', '.join(suffix[1:] for suffix in VIDEO_SUFFIXES)})."
)
SUMMARY_HEADERS = ["face_id", "frames", "first_s", "last_s", *LABELS]
# On a narrow screen the columns stack, and a result (an example clicked, a photo uploaded) lands a screen or more
# below where the user is looking: scroll it into view when it arrives, unless it is already in view.
SHOW_RESULT_JS = """() => {
    const result = document.getElementById("image-output");
    if (!result || window.innerWidth > 640 || !result.querySelector("img")) return;
    const box = result.getBoundingClientRect();
    if (box.top < 0 || box.top > window.innerHeight * 0.5) result.scrollIntoView({behavior: "smooth", block: "start"});
}"""


class ErrorNotes:
    """The reason for each browser session's last failure, per tab, so that the page can keep it on screen.

    A gr.Error reaches the page as a toast that fades, and a `.failure` handler is not told what went wrong: the
    handler that fails records its message here, and the `.failure` handler of the same session shows it.
    """

    SIZE = 1024  # sessions remembered; API clients never collect their notes, so the oldest are forgotten

    def __init__(self) -> None:
        self._notes: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = threading.Lock()

    def error(self, request: gr.Request | None, tab: str, message: str) -> gr.Error:
        """Record `message` for this session's `tab`; the gr.Error to raise."""
        session = getattr(request, "session_hash", None)
        if session:
            with self._lock:
                self._notes[session, tab] = message
                self._notes.move_to_end((session, tab))
                while len(self._notes) > self.SIZE:
                    self._notes.popitem(last=False)
        return gr.Error(message, print_exception=False)

    def pop(self, request: gr.Request | None, tab: str) -> str:
        """The message recorded for this session's `tab` (and forget it), or "" if none."""
        with self._lock:
            return self._notes.pop((getattr(request, "session_hash", None), tab), "")


error_notes = ErrorNotes()


def plural(count: int, noun: str) -> str:
    """`count` and `noun`, plural unless the count is 1: "1 face", "3 faces"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def confident(faces: list[TrackedFace], threshold: float) -> list[TrackedFace]:
    """The tracked faces whose top label reaches the confidence threshold."""
    return [tracked for tracked in faces if tracked.face.confidence >= threshold]


def _finite(value: Any) -> float | None:
    """`value` as a float if it is a finite real number (not a bool, a string or None), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def check_number(value: Any, what: str, low: float, high: float, *, whole: bool = False, unit: str = "") -> float:
    """`value` as a float if it is a finite number from `low` to `high` (and whole, if `whole`); else gr.Error.

    Every numeric setting of every event goes through here: a script that sends raw JSON skips the sliders' range
    checks (and /predict skips Gradio's preprocessing altogether), and JSON can carry NaN and Infinity.
    """
    number = _finite(value)
    if number is None or not low <= number <= high or (whole and not number.is_integer()):
        kind = "a whole number" if whole else "a number"
        raise gr.Error(
            f"{what} must be {kind}{unit} from {low:g} to {high:g}, not {value!r:.40}.", print_exception=False
        )
    return number


def check_settings(min_face_size: Any, threshold: Any) -> tuple[int, float]:
    """The minimum face size (pixels) and confidence threshold, checked; gr.Error with a message if out of range."""
    size = check_number(min_face_size, "The minimum face size", SMALLEST_FACE, MAX_MIN_FACE, unit=" of pixels")
    return int(size), check_number(threshold, "The confidence threshold", 0.0, 1.0)


def predict(
    image: dict[str, Any] | None, min_face_size: Any = DEFAULT_MIN_FACE, threshold: Any = 0.0,
    request: gr.Request = None,
) -> tuple[np.ndarray, dict[str, float] | None, list[dict[str, Any]]]:
    """Detect and classify every face in one image (the /predict endpoint; `image` is Gradio's FileData dict).

    Returns the annotated image, the probabilities of the most prominent (largest) face over the 7 emotions,
    and the list of faces, largest first, each with its box (x, y, w, h), label, confidence and probabilities.
    """
    if not image:
        raise error_notes.error(request, "image", "Upload or paste an image first.")
    try:
        min_face, limit = check_settings(min_face_size, threshold)
    except gr.Error as error:
        raise error_notes.error(request, "image", error.message) from None
    try:
        # The event skips Gradio's own decoding (preprocess=False), so that a bad file gets our message, not "Error".
        # A large photo is analysed shrunk (emotion.images.MAX_SIDE); the boxes returned are in its own pixels.
        result = analyze_image(recognizer, image.get("path"), min_face, limit)
    except (ImageError, ValueError) as error:  # a message for the user, not a traceback in the log
        raise error_notes.error(request, "image", str(error)) from None
    annotated = recognizer.annotate(result.rgb, result.faces, min_side=ANNOTATE_MIN_SIDE)
    faces = [in_source_pixels(face, result.scale) for face in result.faces]
    probabilities = faces[0].probabilities if faces else None
    return annotated, probabilities, [face.to_dict() for face in faces]


def clear_image_result(request: gr.Request) -> tuple[None, None, None, None, str]:
    """After a failed prediction: clear the previous image's result, so that it is not taken for this one's, and
    say why it failed."""
    reason = error_notes.pop(request, "image")
    return None, None, None, None, f"**No result.** {reason}" if reason else FAILED_SUMMARY


def describe_faces(faces: list[dict[str, Any]] | None, threshold: float) -> tuple[Any, Any]:
    """The per-face table and a one-line summary of an image's result (no update while there is no result)."""
    if faces is None:
        return gr.skip(), gr.skip()
    rows = [
        [number, face["label"], round(face["confidence"], 3), ", ".join(str(v) for v in face["box"])]
        for number, face in enumerate(faces, start=1)
    ]
    if not faces:
        above = f" with a confidence of at least {threshold:.0%}" if threshold > 0 else ""
        summary = (
            f"**No face found{above}.** Try a photo where the face is frontal, well lit and larger than the "
            "minimum face size, or lower the minimum face size."
        )
    elif faces[0]["whole_image"]:
        summary = "**No face detected**, but the image looks like a face crop: the whole image was classified."
    else:
        summary = f"**{plural(len(faces), 'face')} found.**" + (" Face 1 is the largest." if len(faces) > 1 else "")
    return rows, summary


class WebcamSession:
    """One browser session's webcam state: its face tracker (smoothing across frames), the faces' timeline and a
    frame-rate meter."""

    def __init__(self) -> None:
        """A fresh tracker, timeline and frame-rate window (one per webcam session)."""
        self.tracker = FaceTracker(recognizer, smoothing=0.6)
        self.timeline = Timeline(LIVE_TIMELINE_ROWS)
        self.started = time.monotonic()
        self.window_start = time.perf_counter()
        self.window_frames = 0
        self.busy = 0.0  # seconds spent processing within the window

    def tick(self, seconds: float) -> str | None:
        """Count one processed frame; every FPS_WINDOW seconds, return the new frame-rate text (else None)."""
        self.window_frames += 1
        self.busy += seconds
        elapsed = time.perf_counter() - self.window_start
        if elapsed < FPS_WINDOW:
            return None
        text = f"{self.window_frames / elapsed:.1f} frames/s ({1000 * self.busy / self.window_frames:.0f} ms per frame)"
        self.window_start, self.window_frames, self.busy = time.perf_counter(), 0, 0.0
        return text


def annotate_webcam(
    frame: np.ndarray | None, session: WebcamSession | None, min_face_size: float, threshold: float, detect_every: float
) -> tuple[Any, Any, WebcamSession | None]:
    """Annotate one webcam frame, with labels smoothed per face across frames.

    Returns the annotated frame, the frame-rate text (or no update) and the session state carried to the next frame.
    """
    if frame is None:  # the stream can send an empty frame (camera starting or stopping): keep what is shown
        return gr.skip(), gr.skip(), session
    min_face_size, threshold = check_settings(min_face_size, threshold)
    every = check_number(detect_every, "Detect faces every N frames: N", 1, MAX_DETECT_EVERY, whole=True)
    started = time.perf_counter()
    session = session or WebcamSession()
    session.tracker.detect_every = int(every)
    faces = confident(session.tracker.track(frame, int(min_face_size)), float(threshold))
    session.timeline.add(time.monotonic() - session.started, session.tracker.frames - 1, faces)
    annotated = annotate_tracked(recognizer, frame, faces)
    fps = session.tick(time.perf_counter() - started)
    return annotated, gr.skip() if fps is None else fps, session


def stream_camera(
    url: str, frame_skip: float, max_duration: float, min_face_size: float, threshold: float,
    session: dict[str, Any], request: gr.Request = None,
) -> Iterator[tuple[Any, str]]:
    """Annotate frames from an IP camera until Stop, the maximum duration, or the end of the stream.

    Yields (annotated frame, status text). Checks the settings, and takes one of the CAMERA_SLOTS for the stream
    (or says at once that the cameras are busy); `camera_frames` streams.
    """
    try:
        skip = check_number(frame_skip, "The frame skip", 0, MAX_FRAME_SKIP, whole=True)
        duration = check_number(max_duration, "The maximum duration", *CAMERA_DURATION_S, unit=" of seconds")
        min_face, limit = check_settings(min_face_size, threshold)
    except gr.Error as error:
        raise error_notes.error(request, "camera", error.message) from None
    previous = session.get("stop")
    if previous is not None:
        previous.set()  # a second Start stops this session's first stream, which then frees its slot
    if not CAMERA_SLOTS.acquire(timeout=CAMERA_HANDOVER_S if previous is not None else 0):
        raise error_notes.error(request, "camera", CAMERAS_BUSY)
    try:
        yield from camera_frames(url, int(skip), duration, min_face, limit, session, request)
    finally:
        CAMERA_SLOTS.release()


def camera_frames(
    url: str, frame_skip: float, max_duration: float, min_face_size: float, threshold: float,
    session: dict[str, Any], request: gr.Request = None,
) -> Iterator[tuple[Any, str]]:
    """Annotate frames from an IP camera (settings checked) until Stop, the maximum duration, or the stream's end.

    Yields (annotated frame, status text). One stream per browser session: a second Start stops the first. The
    faces' timeline is kept in `session["timeline"]` (see `timeline_csv`).
    """
    previous = session.get("stop")
    if previous is not None:
        previous.set()  # else the first stream could no longer be stopped and would hold a camera slot to its end
    stop = session["stop"] = threading.Event()
    timeline = session["timeline"] = Timeline(LIVE_TIMELINE_ROWS)
    tracker = FaceTracker(recognizer, smoothing=0.6)
    started = time.monotonic()
    frames = 0
    try:
        # Checks the URL (scheme, safety policy) before connecting; every failure is a CameraError for the user.
        camera = iter_camera_frames(url, frame_skip=int(frame_skip), max_duration=float(max_duration), stop_event=stop)
        log.info("Camera stream from %s", redact_url(url))  # never the URL itself: it may hold a password
        for frame in camera:
            faces = confident(tracker.track(frame, int(min_face_size)), float(threshold))
            timeline.add(time.monotonic() - started, frames, faces)
            frames += 1
            rate = frames / (time.monotonic() - started)
            yield annotate_tracked(recognizer, frame, faces), f"Streaming: {plural(frames, 'frame')}, {rate:.1f} frames/s"
    except (CameraError, ValueError) as error:
        if not frames:
            raise error_notes.error(request, "camera", str(error)) from None
        gr.Warning(str(error))
        yield gr.skip(), f"{error} {plural(frames, 'frame')} shown."
        return
    if stop.is_set():
        reason = "Stopped."
    elif time.monotonic() - started >= float(max_duration):
        reason = f"Reached the maximum duration ({float(max_duration):.0f} s)."
    else:
        reason = "The camera stream ended."
    yield gr.skip(), f"{reason} {plural(frames, 'frame')} shown."


def stop_camera(session: dict[str, Any]) -> None:
    """Ask this session's camera stream to stop (it ends after the frame in progress)."""
    if "stop" in session:
        session["stop"].set()


def camera_failed(request: gr.Request) -> str:
    """The status line after a camera stream failed to start: the reason, kept on screen."""
    return error_notes.pop(request, "camera") or "The camera stream could not be started."


def new_output_folder() -> Path:
    """A fresh folder in Gradio's cache for one request's files: served from there, deleted with the cache."""
    cache = Path(get_upload_folder())
    cache.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="emotion-", dir=cache))


def timeline_csv(timeline: Timeline | None, name: str) -> str | None:
    """Write a live view's timeline to a CSV file (None, with a warning, while it is empty)."""
    if timeline is None or not timeline.rows:
        gr.Warning("No faces recorded yet: there is no timeline to download.")
        return None
    path = new_output_folder() / f"{name}_emotions.csv"
    timeline.write_csv(path)
    return str(path)


def webcam_timeline(session: WebcamSession | None) -> str | None:
    """The webcam session's timeline as a CSV file, for the download button."""
    return timeline_csv(session.timeline if session else None, "webcam")


def camera_timeline(session: dict[str, Any]) -> str | None:
    """The last IP-camera stream's timeline as a CSV file, offered when the stream ends."""
    timeline = session.get("timeline")
    return timeline_csv(timeline, "camera") if timeline is not None and timeline.rows else None


def check_rate(rate: Any) -> float:
    """Frames analysed per second, checked; gr.Error with a message if out of range."""
    value = _finite(rate)
    if value is None or not 0 < value <= MAX_RATE:
        raise gr.Error(f"The frames analysed per second must be a number above 0 and at most {MAX_RATE:.0f}, "
                       f"not {rate!r:.40}.", print_exception=False)
    return value


def analyze_video_file(
    video: str | None, rate: Any = DEFAULT_RATE, min_face_size: Any = DEFAULT_MIN_FACE, threshold: Any = 0.0,
    request: gr.Request = None, progress: gr.Progress = gr.Progress(),
) -> tuple[str, str, str, list[list[Any]]]:
    """Track and classify every face of a video file (the /analyze_video endpoint).

    Returns the annotated video (H.264 MP4), the CSV (one row per face per analysed frame), the timeline plot
    (PNG) and the per-face summary (a table: face_id, frames, first_s, last_s and the share of frames in each of
    the 7 emotions).
    """
    if not video:
        raise error_notes.error(request, "video", "Upload a video first.")
    try:
        min_face, limit = check_settings(min_face_size, threshold)
        per_second = check_rate(rate)
    except gr.Error as error:
        raise error_notes.error(request, "video", error.message) from None
    folder = new_output_folder()
    stem = Path(video).stem[:60] or "video"
    every = 1

    def report(done: int, total: int) -> None:
        nonlocal every
        every = max(1, total // 100) if total else 10  # about 100 updates, not one message per frame
        if done % every == 0 or done == total:
            progress((done, total or None), desc="Analysing frames", unit="frames")

    progress(0, desc="Reading the video")
    try:
        result = analyze_video(
            recognizer, video, folder / f"{stem}_annotated", rate=per_second, min_face_size=min_face, threshold=limit,
            progress=report,
        )
        if not result.timeline.rows:
            raise VideoError(NO_FACES.format(frames=result.analysed))
    except VideoError as error:
        shutil.rmtree(folder, ignore_errors=True)
        raise error_notes.error(request, "video", str(error)) from None
    progress(1.0, desc="Drawing the timeline")
    csv_path = folder / f"{stem}_emotions.csv"
    result.timeline.write_csv(csv_path)
    plot_path = folder / f"{stem}_timeline.png"
    series = {face: result.timeline.series(face) for face in result.timeline.face_ids()}
    plot_timeline(series, plot_path, duration=result.duration_s)
    summary = [[row[key] for key in SUMMARY_HEADERS] for row in result.timeline.summary()]
    log.info("Video: %d frames, %d analysed, %d faces", result.frames, result.analysed, len(summary))
    if result.note:
        gr.Warning(result.note)
    if result.timeline.dropped:
        gr.Warning(f"Too many faces for one table: the CSV keeps the last {len(result.timeline.rows)} rows.")
    return str(result.video_path), str(csv_path), str(plot_path), summary


def one_video_at_a_time(analyze: Callable[..., Any]) -> Callable[..., Any]:
    """`analyze` run one call at a time, with at most 2 more calls waiting; any further call fails at once."""

    @functools.wraps(analyze)  # Gradio reads the signature (gr.Request, gr.Progress) through the wrapper
    def admitted(*args: Any, **kwargs: Any) -> Any:
        if not VIDEO_ADMITTED.acquire(blocking=False):
            raise gr.Error(VIDEOS_BUSY, print_exception=False)
        try:
            with VIDEO_RUNNING:
                return analyze(*args, **kwargs)
        finally:
            VIDEO_ADMITTED.release()

    return admitted


def video_failed(request: gr.Request) -> tuple[None, None, None, None, str]:
    """After a failed analysis: clear the previous video's results and keep the reason on screen."""
    reason = error_notes.pop(request, "video") or "The video could not be analysed."
    return None, None, None, None, f"**No result.** {reason}"


def video_done(summary: Any) -> str:
    """The line under the Video tab's results: how many faces were followed."""
    rows = getattr(summary, "values", None)
    count = len(rows) if rows is not None else len(summary or [])
    return f"**{plural(count, 'face')} followed.** Download the CSV for every analysed frame." if count else ""


with gr.Blocks(title="Facial emotion recognition", delete_cache=(600, 600)) as demo:
    gr.Markdown(
        "# Facial emotion recognition\n"
        f"Finds faces and reads their expression as one of {len(LABELS)} emotions ({', '.join(LABELS)}). "
        "An expression is not a feeling: treat the labels as a demo of a FER2013 model, not as a judgement."
    )
    with gr.Accordion("Settings (all tabs)", open=False):
        with gr.Row():
            min_face_size = gr.Slider(
                SMALLEST_FACE, 400, value=DEFAULT_MIN_FACE, step=4, label="Minimum face size (pixels)",
                info="Smaller finds more distant faces but is slower and finds more false faces.",
            )
            threshold = gr.Slider(
                0.0, 1.0, value=0.0, step=0.05, label="Confidence threshold",
                info="Faces whose top emotion is less likely than this are not shown.",
            )

    with gr.Tab("Image"):
        with gr.Row():
            with gr.Column():
                input_img = gr.Image(
                    label=f"Photo (jpg, png, webp or bmp; {UPLOAD_LIMIT})", sources=["upload", "clipboard"], type="filepath",
                    image_mode=None, elem_id="image-input",
                )
                predict_btn = gr.Button("Recognize emotions", variant="primary")
                examples_column = gr.Column()  # filled below, once the outputs the examples show exist
            with gr.Column():
                output_img = gr.Image(label="Annotated", format="jpeg", interactive=False, elem_id="image-output")
                face_summary = gr.Markdown(elem_id="image-summary")
                top_emotions = gr.Label(label="Most prominent face", num_top_classes=len(LABELS), elem_id="image-label")
        face_table = gr.Dataframe(  # narrow columns first and wrapped text: the headers fit a phone's 390 px
            headers=["#", "emotion", "confidence", "box (x, y, w, h)"], label="Faces", interactive=False,
            column_widths=["10%", "26%", "34%", "30%"], wrap=True, elem_id="image-faces",
        )
        with gr.Accordion("Faces as JSON (what /predict returns)", open=False):
            faces_json = gr.JSON(label="Faces")
        image_outputs = [output_img, top_emotions, faces_json]
        if EXAMPLES:
            with examples_column:
                gr.Examples(
                    EXAMPLES, inputs=input_img, outputs=image_outputs, fn=predict, cache_examples=True,
                    cache_mode="lazy", preprocess=False, api_name="load_example", api_visibility="private",
                    elem_id="image-examples",
                )

    with gr.Tab("Video"):
        gr.Markdown(
            f"Each face is followed through the video (face 1, face 2, ...) and its emotions are read over time. "
            f"{VIDEO_LIMITS} You get an annotated copy (without sound), a CSV with one row per face per analysed "
            "frame, a timeline plot and a summary per face."
        )
        with gr.Row():
            with gr.Column():
                video_in = gr.Video(label="Video", sources=["upload"], elem_id="video-input")
                video_rate = gr.Slider(
                    1, MAX_RATE, value=DEFAULT_RATE, step=1, label="Frames analysed per second",
                    info="Every frame of a slower video. Faces are drawn on every frame of the copy.",
                )
                video_btn = gr.Button("Analyse video", variant="primary", elem_id="video-button")
            with gr.Column():
                video_out = gr.Video(label="Annotated video", interactive=False, elem_id="video-output")
                video_status = gr.Markdown(elem_id="video-status")
                video_csv = gr.File(label="CSV: one row per face per analysed frame", elem_id="video-csv")
        video_plot = gr.Image(label="Timeline", type="filepath", interactive=False, elem_id="video-plot")
        video_summary = gr.Dataframe(
            headers=SUMMARY_HEADERS, label="Per face: frames analysed, first and last time seen (s), share of frames "
            "in each emotion", interactive=False, elem_id="video-summary",
        )
        video_outputs = [video_out, video_csv, video_plot, video_summary]

    with gr.Tab("Webcam"):
        gr.Markdown("Click the camera, then **Record**. Annotated frames stream back while you record.")
        with gr.Row():
            webcam = gr.Image(
                label="Webcam", sources=["webcam"], streaming=True, elem_id="webcam-input",
                webcam_options=gr.WebcamOptions(constraints={"video": WEBCAM_SIZE}),
            )
            webcam_out = gr.Image(label="Annotated", format="jpeg", interactive=False, elem_id="webcam-output")
        with gr.Row():
            detect_every = gr.Slider(
                1, MAX_DETECT_EVERY, value=1, step=1, label="Detect faces every N frames",
                info="Higher is faster: frames in between reuse the tracked boxes (emotions are read every frame).",
            )
            webcam_fps = gr.Textbox(
                label="Processing speed", value="not started", interactive=False, elem_id="webcam-fps"
            )
        with gr.Row():
            webcam_csv_btn = gr.Button("Download the faces' timeline (CSV)", elem_id="webcam-csv-button")
            webcam_csv = gr.File(label="Timeline: one row per face per frame", elem_id="webcam-csv")
        webcam_session = gr.State(None)

    with gr.Tab("IP camera"):
        gr.Markdown(
            "An HTTP(S) MJPEG stream or a snapshot JPEG URL (polled); `rtsp://` only where the app runs with "
            "`EMOTION_ALLOW_PRIVATE_CAMERAS=1` (your own machine). At most 2 streams run at once. "
            "A hosted Space reaches cameras only on ports 80, 443 and 8080. The URL is never stored, and logs "
            "show it without credentials."
        )
        camera_url = gr.Textbox(label="Camera URL", placeholder="http://camera.example/video.mjpg")
        with gr.Row():
            camera_skip = gr.Slider(
                0, MAX_FRAME_SKIP, value=0, step=1, label="Frame skip", info="Frames skipped after each one shown."
            )
            camera_duration = gr.Slider(*CAMERA_DURATION_S, value=60, step=5, label="Maximum duration (s)")
        with gr.Row():
            camera_start = gr.Button("Start", variant="primary")
            camera_stop = gr.Button("Stop", variant="stop")
        camera_out = gr.Image(label="Annotated", format="jpeg", interactive=False, elem_id="camera-output")
        camera_status = gr.Textbox(label="Status", interactive=False, elem_id="camera-status")
        camera_csv = gr.File(label="Timeline (CSV), offered when the stream ends", elem_id="camera-csv")
        camera_session = gr.State({})

    # Events. Every one has a stable api_name; only /predict and /analyze_video are on the API page. Streaming and
    # UI-only events are private (hidden, not callable by clients), except the camera pair, which is undocumented
    # (hidden but callable) so that scripts and tests can drive a camera session the way the page does.
    predicted = gr.on(
        [predict_btn.click, input_img.upload], predict, inputs=[input_img, min_face_size, threshold],
        outputs=image_outputs, api_name="predict", preprocess=False,
    )
    predicted.failure(  # a failed prediction does not leave the previous image's result on screen
        clear_image_result, outputs=[*image_outputs, face_table, face_summary], api_name="clear_image_result",
        api_visibility="private", queue=False,
    )
    output_img.change(None, js=SHOW_RESULT_JS, api_name="show_result", api_visibility="private", queue=False)
    faces_json.change(
        describe_faces, inputs=[faces_json, threshold], outputs=[face_table, face_summary],
        api_name="describe_faces", api_visibility="private", queue=False,
    )
    webcam.stream(
        annotate_webcam, inputs=[webcam, webcam_session, min_face_size, threshold, detect_every],
        outputs=[webcam_out, webcam_fps, webcam_session], api_name="webcam", api_visibility="private",
        stream_every=WEBCAM_EVERY, time_limit=WEBCAM_TIME_LIMIT, concurrency_limit=2, show_progress="hidden",
    )
    camera_started = camera_start.click(
        stream_camera,
        inputs=[camera_url, camera_skip, camera_duration, min_face_size, threshold, camera_session],
        outputs=[camera_out, camera_status], api_name="camera", api_visibility="undocumented",
        concurrency_limit=None, show_progress="minimal",  # limited by CAMERA_SLOTS instead, outside the queue
    )
    camera_started.failure(camera_failed, outputs=camera_status, api_name="camera_failed", api_visibility="private")
    camera_started.then(
        camera_timeline, inputs=camera_session, outputs=camera_csv, api_name="camera_timeline",
        api_visibility="private",
    )
    webcam_csv_btn.click(
        webcam_timeline, inputs=webcam_session, outputs=webcam_csv, api_name="webcam_timeline",
        api_visibility="private",
    )
    video_analysed = video_btn.click(
        one_video_at_a_time(analyze_video_file), inputs=[video_in, video_rate, min_face_size, threshold],
        outputs=video_outputs, api_name="analyze_video", concurrency_limit=None,  # see VIDEO_ADMITTED
    )
    video_analysed.success(
        video_done, inputs=video_summary, outputs=video_status, api_name="video_done", api_visibility="private",
        queue=False,
    )
    video_analysed.failure(
        video_failed, outputs=[*video_outputs, video_status], api_name="video_failed", api_visibility="private",
        queue=False,
    )
    camera_stop.click(
        stop_camera, inputs=camera_session, api_name="stop_camera", api_visibility="undocumented", queue=False
    )

# Deliberate limits for 2 CPU cores. Photos, webcam sessions and camera streams each run at most 2 at a time, and
# videos 1 at a time, in separate groups so that a long stream never blocks a photo; more at once would only slow every one of them down.
# A stream holds its slot while it runs, bounded by WEBCAM_TIME_LIMIT or the camera's maximum duration. At most 16
# requests wait: beyond that a visitor is told at once that the queue is full, which beats unbounded latency.
# Camera streams and videos never wait in that queue (see CAMERA_SLOTS and VIDEO_ADMITTED).
demo.queue(max_size=16, default_concurrency_limit=2)


def refuse_remote_files(blocks: gr.Blocks) -> None:
    """Make every component refuse an input file given as a URL, which Gradio would otherwise download whole
    (into memory) before the event runs; uploads and the app's own files are unaffected."""

    def local_only(fetch: Any, is_async: bool) -> Any:
        def check(path: Any) -> None:
            if is_http_url_like(path):
                raise gr.Error(REMOTE_FILE, print_exception=False)

        async def fetch_local_async(path: Any) -> str | None:
            check(path)
            return await fetch(path)

        def fetch_local(path: Any) -> str | None:
            check(path)
            return fetch(path)

        return fetch_local_async if is_async else fetch_local

    for block in blocks.blocks.values():
        if isinstance(block, gr.components.Component):
            block.async_move_resource_to_block_cache = local_only(block.async_move_resource_to_block_cache, True)
            block.move_resource_to_block_cache = local_only(block.move_resource_to_block_cache, False)


refuse_remote_files(demo)


def stop_like_ctrl_c(signum: int, frame: Any) -> None:
    """SIGTERM handler: stop as on Ctrl+C (Gradio closes its server, then the exit handlers run)."""
    raise KeyboardInterrupt

if __name__ == "__main__":
    # A stopped app deletes its cache folder (atexit); SIGTERM (how Spaces and service managers stop it) ends Gradio
    # the way Ctrl+C does, so that the exit handlers run.
    signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    demo.launch(max_file_size=MAX_UPLOAD_BYTES)
