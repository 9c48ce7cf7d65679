"""The IP camera tab, end to end: `python app.py` (fixture `app_server`) reading real cameras on loopback.

The MJPEG camera is ffmpeg serving a video of a real face (fixtures `face_clip`, `mjpeg_clip_server`). The tab's
events are undocumented endpoints (/camera, /stop_camera): off the API page, but callable, so gradio_client can
drive one session just as the page does.
"""

import http.server
import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

SNAPSHOT = Path(__file__).resolve().parent.parent / "examples" / "grace_hopper.jpg"
# The camera endpoint's inputs after the URL: frame skip, maximum duration (s), minimum face size, threshold.
DEFAULTS = (0, 60, 48, 0.0)
FINISH_TIMEOUT = 60  # seconds; generous for 2 busy cores


@pytest.fixture
def client(app_url):
    """A fresh client per test: one browser session, with its own camera state."""
    return Client(app_url, verbose=False)


def frames_of(outputs) -> list[str]:
    """The annotated frame files among a job's outputs (the last output only updates the status)."""
    return [image for image, _ in outputs if isinstance(image, str)]


def wait_for_frames(job, count: int, timeout: float = FINISH_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while len(frames_of(job.outputs())) < count:
        assert not job.done(), f"the stream ended early: {job.outputs()[-1:]}"
        assert time.monotonic() < deadline, f"fewer than {count} frames after {timeout} s"
        time.sleep(0.1)


def clip_frames(clip: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(clip))
    frames = []
    while (ok_frame := capture.read())[0]:
        frames.append(ok_frame[1])
    capture.release()
    return frames


def test_mjpeg_stream_comes_back_annotated_until_it_ends(client, face_clip, mjpeg_clip_server):
    url = mjpeg_clip_server(face_clip, loop=False)
    job = client.submit(url, *DEFAULTS, api_name="/camera")
    job.result(timeout=FINISH_TIMEOUT)
    outputs = job.outputs()

    frames = frames_of(outputs)
    originals = clip_frames(face_clip)
    assert len(frames) == len(originals) == 40  # every frame of the clip, in order (frame skip 0)
    for index in (0, len(frames) // 2, len(frames) - 1):
        annotated = cv2.imread(frames[index])
        assert annotated.shape == (480, 640, 3)
        # Where the app drew (box and label), pixels differ strongly from the camera's frame; elsewhere they match
        # up to JPEG noise. The drawing surrounds her face (at about x 224-432, y 67-275), in the middle of the
        # frame. No median for y: the label above the box can hold as many drawn pixels as the box itself.
        drawn = np.abs(annotated.astype(int) - originals[index].astype(int)).max(axis=2) > 80
        ys, xs = np.nonzero(drawn)
        assert len(xs) > 500, f"frame {index}: nothing drawn"
        assert 150 < np.median(xs) < 490
        assert xs.min() < 330 < xs.max() and ys.min() < 170 < ys.max()
    statuses = [status for _, status in outputs]
    assert statuses[0].startswith("Streaming: 1 frame,") and statuses[-2].startswith("Streaming: 40 frames,")
    assert statuses[-1] == "The camera stream ended. 40 frames shown."


def test_stop_ends_the_stream(client, face_clip, mjpeg_clip_server):
    job = client.submit(mjpeg_clip_server(face_clip, loop=True), *DEFAULTS, api_name="/camera")
    wait_for_frames(job, 3)
    stopped = time.monotonic()
    client.predict(api_name="/stop_camera")
    job.result(timeout=FINISH_TIMEOUT)
    assert time.monotonic() - stopped < 15
    status = job.outputs()[-1][1]
    assert status.startswith("Stopped.") and status.endswith("frames shown.")


def test_a_second_start_stops_the_first_stream(client, face_clip, mjpeg_clip_server):
    # One stream per session: Start again (the same session) ends the running stream, which Stop could no longer
    # reach, and the new one streams until Stop.
    first = client.submit(mjpeg_clip_server(face_clip, loop=True), *DEFAULTS, api_name="/camera")
    wait_for_frames(first, 3)
    second = client.submit(mjpeg_clip_server(face_clip, loop=True), *DEFAULTS, api_name="/camera")
    first.result(timeout=FINISH_TIMEOUT)
    assert first.outputs()[-1][1].startswith("Stopped.")
    wait_for_frames(second, 3)
    client.predict(api_name="/stop_camera")
    second.result(timeout=FINISH_TIMEOUT)
    assert second.outputs()[-1][1].startswith("Stopped.")


def test_maximum_duration_ends_the_stream(client, face_clip, mjpeg_clip_server):
    started = time.monotonic()
    job = client.submit(mjpeg_clip_server(face_clip, loop=True), 0, 5, 48, 0.0, api_name="/camera")
    job.result(timeout=FINISH_TIMEOUT)
    assert time.monotonic() - started >= 5
    assert len(frames_of(job.outputs())) >= 3
    assert job.outputs()[-1][1].startswith("Reached the maximum duration (5 s).")


def test_frame_skip_shows_one_frame_in_n(client, face_clip, mjpeg_clip_server):
    job = client.submit(mjpeg_clip_server(face_clip, loop=False), 3, 60, 48, 0.0, api_name="/camera")
    job.result(timeout=FINISH_TIMEOUT)
    assert len(frames_of(job.outputs())) == 10  # frames 0, 4, ..., 36 of 40


class FakeWebServer(http.server.BaseHTTPRequestHandler):
    """Camera-like URLs that are not cameras (/page, /text, /private, anything else: 404), a snapshot camera, and
    an endless MJPEG camera for any number of clients (/stream.mjpg, 5 frames/s of the face photo)."""

    def do_GET(self):
        if self.path == "/snapshot.jpg":
            self.reply(200, "image/jpeg", SNAPSHOT.read_bytes())
        elif self.path == "/stream.mjpg":
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            picture = SNAPSHOT.read_bytes()
            head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(picture)}\r\n\r\n".encode()
            deadline = time.monotonic() + 120  # a safety cap: the tests stop their streams long before
            try:
                while time.monotonic() < deadline:
                    self.wfile.write(head + picture + b"\r\n")
                    time.sleep(0.2)
            except OSError:  # the app closed the stream
                pass
        elif self.path == "/page":
            self.reply(200, "text/html; charset=utf-8", b"<!doctype html><title>Router</title><h1>Welcome</h1>")
        elif self.path == "/text":
            self.reply(200, "text/plain", b"hello")
        elif self.path == "/private":
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="camera"')
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.reply(404, "text/plain", b"not found")

    def reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def web_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeWebServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_snapshot_url_is_polled(client, web_server):
    job = client.submit(f"{web_server}/snapshot.jpg", *DEFAULTS, api_name="/camera")
    wait_for_frames(job, 3)
    client.predict(api_name="/stop_camera")
    job.result(timeout=FINISH_TIMEOUT)
    frames = frames_of(job.outputs())
    assert cv2.imread(frames[0]).shape == (600, 512, 3)
    assert job.outputs()[-1][1].startswith("Stopped.")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/page", "shows a web page, not camera pictures"),
        ("/text", "does not send camera pictures"),
        ("/missing.mjpg", "HTTP 404"),
        ("/private", "needs a user name and password"),
    ],
)
def test_a_url_that_is_not_a_camera_gets_its_message(client, web_server, path, message):
    with pytest.raises(AppError, match=message):
        client.predict(f"{web_server}{path}", *DEFAULTS, api_name="/camera")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:9/cam.mjpg", "refused the connection"),  # the discard port: nothing listens
        ("http://camera.invalid/cam.mjpg", "could not find the camera's host"),
        ("ftp://127.0.0.1/cam.mjpg", "Only camera addresses starting with"),
        ("", "enter the camera's address"),
    ],
)
def test_an_unreachable_or_bad_url_gets_its_message(client, url, message):
    with pytest.raises(AppError, match=message):
        client.predict(url, *DEFAULTS, api_name="/camera")


# The sliders' own check (Gradio's) refuses values past their ends, but not NaN, nor a fractional frame skip: the
# app's check_number does. Either way the camera is never opened.
SLIDER_RANGE = "Value {} is {} than {} value {}"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ((0, math.nan, 48, 0.0), "The maximum duration must be a number of seconds from 5 to 600, not nan"),
        ((0, math.inf, 48, 0.0), SLIDER_RANGE.format("inf", "greater", "maximum", 600)),
        ((0, 1e9, 48, 0.0), SLIDER_RANGE.format("1000000000.0", "greater", "maximum", 600)),
        ((math.nan, 60, 48, 0.0), "The frame skip must be a whole number from 0 to 10, not nan"),
        ((-1, 60, 48, 0.0), SLIDER_RANGE.format(-1, "less", "minimum", 0)),
        ((0.5, 60, 48, 0.0), "The frame skip must be a whole number from 0 to 10, not 0.5"),
        ((0, 60, math.nan, 0.0), "The minimum face size must be a number of pixels from 24 to 4096, not nan"),
        ((0, 60, 48, math.nan), "The confidence threshold must be a number from 0 to 1, not nan"),
    ],
)
def test_settings_out_of_range_are_refused_before_connecting(app_url, web_server, settings, message):
    # A script sending raw JSON skips the sliders' range checks (gradio_client refuses to send NaN; Python's json
    # module writes it); NaN as the maximum duration once streamed past 640 s. Sent as such a script would.
    started = time.monotonic()
    with httpx.Client(base_url=f"{app_url}gradio_api/", timeout=FINISH_TIMEOUT) as http:
        body = json.dumps({"data": [f"{web_server}/stream.mjpg", *settings]})  # NaN and Infinity as JSON extensions
        event = http.post("call/camera", content=body, headers={"Content-Type": "application/json"})
        assert event.status_code == 200, event.text
        answer = http.get(f"call/camera/{event.json()['event_id']}").text
    assert "event: error" in answer and message in answer, answer[-500:]
    assert "Streaming" not in answer
    assert time.monotonic() - started < FINISH_TIMEOUT


def test_photos_keep_answering_while_camera_streams_are_refused(app_url, web_server):
    # 18 camera requests from 18 sessions once filled the queue photos share (2 streaming, 16 waiting), so that
    # every /predict answered "Queue is full". Streams now run at most 2 at a time, outside that queue: the 16
    # others are told at once that the cameras are busy, and photos keep their answers all along.
    clients = [Client(app_url, verbose=False) for _ in range(18)]
    jobs = [c.submit(f"{web_server}/stream.mjpg", 0, 60, 48, 0.0, api_name="/camera") for c in clients]
    photo = Client(app_url, verbose=False)
    try:
        deadline = time.monotonic() + FINISH_TIMEOUT
        while sum(job.done() for job in jobs) < 16 or sum(len(frames_of(job.outputs())) > 0 for job in jobs) < 2:
            assert time.monotonic() < deadline, [job.status().code for job in jobs]
            time.sleep(0.2)
        with ThreadPoolExecutor(3) as pool:  # photos from 3 users at once, beside the 2 streams
            users = [photo, Client(app_url, verbose=False), Client(app_url, verbose=False)]
            answers = list(pool.map(lambda user: user.predict(handle_file(str(SNAPSHOT)), api_name="/predict"), users))
        assert all(len(faces) == 1 for _, _, faces in answers)
        refused = [job for job in jobs if job.done()]
        for job in refused:
            with pytest.raises(AppError, match="Two camera streams are already running"):
                job.result(timeout=1)
        streaming = [index for index, job in enumerate(jobs) if not job.done()]
        assert len(streaming) == 2
    finally:
        for c in clients:
            c.predict(api_name="/stop_camera")
    for index in streaming:
        jobs[index].result(timeout=FINISH_TIMEOUT)
        assert jobs[index].outputs()[-1][1].startswith("Stopped.")
    # The slots are free again: a new stream starts.
    again = Client(app_url, verbose=False)
    job = again.submit(f"{web_server}/stream.mjpg", *DEFAULTS, api_name="/camera")
    wait_for_frames(job, 2)
    again.predict(api_name="/stop_camera")
    job.result(timeout=FINISH_TIMEOUT)


def test_credentials_never_reach_the_log(app_server, client, web_server):
    secret = "s3cret-Pa55word"
    with pytest.raises(AppError, match="needs a user name and password"):
        url = web_server.replace("http://", f"http://admin:{secret}@") + "/private"
        client.predict(url, *DEFAULTS, api_name="/camera")
    log = app_server.log_path.read_text()
    assert "***@127.0.0.1" in log  # the attempt was logged, redacted
    assert secret not in log


def test_a_cancelled_stream_frees_its_slot(app_url, web_server):
    # Gradio closes a cancelled run's generator: the stream's camera slot must come back with it, or two cancelled
    # streams would leave the cameras busy for good.
    clients = [Client(app_url, verbose=False) for _ in range(2)]
    jobs = [c.submit(f"{web_server}/stream.mjpg", *DEFAULTS, api_name="/camera") for c in clients]
    for job in jobs:
        wait_for_frames(job, 2)
    for job in jobs:
        job.cancel()
    again = Client(app_url, verbose=False)
    deadline = time.monotonic() + FINISH_TIMEOUT
    while True:  # the slots come back once Gradio has closed the cancelled generators
        job = again.submit(f"{web_server}/stream.mjpg", *DEFAULTS, api_name="/camera")
        try:
            wait_for_frames(job, 2, timeout=15)
            break
        except AssertionError:
            with pytest.raises(AppError, match="Two camera streams are already running"):
                job.result(timeout=5)
            assert time.monotonic() < deadline, "the cancelled streams kept their slots"
            time.sleep(1)
    again.predict(api_name="/stop_camera")
    job.result(timeout=FINISH_TIMEOUT)
    assert job.outputs()[-1][1].startswith("Stopped.")
