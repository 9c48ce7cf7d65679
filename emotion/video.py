"""Video files: each face's emotions over time, with stable face ids, an annotated copy and a CSV.

Frames are decoded and encoded one at a time with PyAV (FFmpeg), so memory does not grow with the video's length.
Faces are tracked by `emotion.tracking.FaceTracker`; `Timeline` keeps one row per face per analysed frame and is
shared with the app's webcam and IP-camera tabs.
"""

import csv
import math
import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from .annotate import FONT
from .detect import SMALLEST_FACE
from .labels import LABELS
from .recognizer import EmotionRecognizer
from .tracking import FaceTracker, TrackedFace

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")
# Only these demuxers may open an upload: FFmpeg would also follow playlists (HLS, concat) to other files and URLs.
CONTAINER_FORMATS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi"
MAX_DURATION_S = 300.0  # 5 minutes of 640x480 at 30 frames/s: about a minute of CPU time (see README)
MAX_BYTES = 500 * 1024 * 1024
MAX_FRAME_PIXELS = 4096 * 4096
DEFAULT_RATE = 10.0  # frames analysed per second: every frame of a video up to this rate
WORK_SIDE = 1280  # larger frames are shrunk for analysis and for the annotated copy; the CSV maps boxes back
TRACK_MEMORY_S = 1.0  # a face missed for up to this long keeps its id
SMOOTHING_PER_S = 0.006  # weight kept from the past after one second: 0.6 per frame at 10 analysed frames/s
CSV_COLUMNS = ("time_s", "frame", "face_id", "x", "y", "w", "h", "label", "confidence", *LABELS)
# A Timeline keeps at most this many rows, the latest (about 60 MB): 11 faces in every frame of a 5-minute video
# at 30 analysed frames/s, or a webcam face for over an hour.
MAX_ROWS = 100_000

EMPTY = "The file is empty (0 bytes)."
NOT_A_VIDEO = "This file is not a video we can read. Upload an mp4, webm, mov, mkv or avi file."
UNREADABLE = "This video could not be decoded: it may be damaged, or use a codec we cannot read."
NO_FRAMES = "This video has no frames we could read."
TOO_LARGE = f"This video is larger than {MAX_BYTES // 1024**2} MB: please upload a shorter or smaller one."
TOO_LONG = f"This video is longer than {MAX_DURATION_S / 60:.0f} minutes: please cut it to at most that."
TOO_WIDE = f"This video's frames are larger than {MAX_FRAME_PIXELS // 1_000_000} megapixels."
NO_FACES = (
    "No face was found in this video ({frames} frames analysed). Faces should be frontal, well lit and larger than "
    "the minimum face size; with a confidence threshold above 0, faces under it are left out too."
)


class VideoError(ValueError):
    """A video we cannot use; the message is written for the person who uploaded it."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float  # average frame rate
    duration_s: float | None  # None when the file does not say (some browser recordings)
    frames: int  # expected number of frames (0 when unknown)


@dataclass
class Timeline:
    """One row per face per analysed frame (the CSV_COLUMNS), and what is needed to summarise and plot them.

    At most `max_rows` rows are kept, the latest: `dropped` counts the older ones let go.
    """

    max_rows: int = MAX_ROWS
    rows: deque = field(init=False)
    dropped: int = 0

    def __post_init__(self) -> None:
        self.rows = deque(maxlen=self.max_rows)

    def add(self, time_s: float | None, frame: int, faces: Iterable[TrackedFace], scale: float = 1.0) -> None:
        """Record `faces` seen on frame number `frame` at `time_s` (None for a photo); boxes are divided by `scale`."""
        for tracked in faces:
            self.dropped += len(self.rows) == self.max_rows
            face = tracked.face
            x, y, w, h = (int(round(v / scale)) for v in face.box)
            probs = tuple(round(face.probabilities[label], 4) for label in LABELS)
            time = None if time_s is None else round(time_s, 3)
            self.rows.append((time, frame, tracked.id, x, y, w, h, face.label, round(face.confidence, 4), *probs))

    def face_ids(self) -> list[int]:
        """The ids seen, in order."""
        return sorted({row[2] for row in self.rows})

    def write_csv(self, path: str | os.PathLike, extra: dict[str, object] | None = None) -> None:
        """Write the rows as CSV (`extra` columns, such as a file name, go first)."""
        rows = list(self.rows)  # a snapshot: a live view may add rows from another thread meanwhile
        with open(path, "w", newline="") as file:
            write_rows(csv.writer(file), rows, extra, header=True)

    def series(self, face_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Times (n,) and probabilities (n, 7) of one face."""
        rows = [row for row in self.rows if row[2] == face_id]
        times = np.array([row[0] if row[0] is not None else row[1] for row in rows], dtype=float)
        return times, np.array([row[9:] for row in rows], dtype=float).reshape(-1, len(LABELS))

    def summary(self) -> list[dict[str, object]]:
        """Per face: frames seen, first and last time, and the share of its frames in each emotion."""
        result = []
        for face_id in self.face_ids():
            rows = [row for row in self.rows if row[2] == face_id]
            labels = [row[7] for row in rows]
            times = [row[0] for row in rows if row[0] is not None]
            result.append({
                "face_id": face_id,
                "frames": len(rows),
                "first_s": min(times) if times else None,
                "last_s": max(times) if times else None,
                **{label: round(labels.count(label) / len(rows), 3) for label in LABELS},
            })
        return result


def write_rows(writer, rows: Iterable[tuple], extra: dict[str, object] | None = None, header: bool = False) -> None:
    """Write Timeline rows with a csv writer: empty cells for a missing time; `extra` columns first."""
    extra = extra or {}
    if header:
        writer.writerow([*extra, *CSV_COLUMNS])
    for row in rows:
        writer.writerow([*extra.values(), *("" if value is None else value for value in row)])


def annotate_tracked(recognizer: EmotionRecognizer, rgb: np.ndarray, faces: list[TrackedFace]) -> np.ndarray:
    """The recognizer's annotation ("happy 87%" per box) plus each face's id ("face 2") under its box."""
    out = recognizer.annotate(rgb, [tracked.face for tracked in faces], min_side=None)
    height, width = out.shape[:2]
    scale = max(0.4, min(height, width) / 1100)
    thickness = max(1, round(scale * 2))
    for tracked in faces:
        x, y, w, h = tracked.face.box
        text = f"face {tracked.id}"
        (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
        left = int(np.clip(x, 0, max(width - tw - 4, 0)))
        top = int(np.clip(y + h + 2, 0, max(height - th - base - 4, 0)))
        cv2.rectangle(out, (left, top), (left + tw + 4, top + th + base + 4), (0, 0, 0), cv2.FILLED)
        cv2.putText(out, text, (left + 2, top + th + 2), FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return out


def video_tracker(recognizer: EmotionRecognizer, rate: float) -> FaceTracker:
    """A tracker for `rate` analysed frames per second: ids kept through misses of up to TRACK_MEMORY_S, the same
    smoothing per second at any rate, and only faces seen on the frame itself reported (no stale boxes in the CSV)."""
    smoothing = SMOOTHING_PER_S ** (1 / rate)
    return FaceTracker(recognizer, smoothing=smoothing, max_missed=max(1, round(TRACK_MEMORY_S * rate)), hold=False)


def open_video(path: str | os.PathLike) -> av.container.InputContainer:
    """Open `path` with the allowed demuxers only; VideoError for an empty, oversized or unreadable file."""
    try:
        size = os.path.getsize(path)
    except OSError as error:
        raise VideoError(NOT_A_VIDEO) from error
    if size == 0:
        raise VideoError(EMPTY)
    if size > MAX_BYTES:
        raise VideoError(TOO_LARGE)
    try:
        container = av.open(str(path), "r", container_options={"format_whitelist": CONTAINER_FORMATS})
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise VideoError(NOT_A_VIDEO) from error
    if not container.streams.video:
        container.close()
        raise VideoError(NOT_A_VIDEO)
    return container


def probe(container: av.container.InputContainer) -> VideoInfo:
    """Frame size, rate, duration and frame count of the first video stream; VideoError past the limits."""
    stream = container.streams.video[0]
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        raise VideoError(UNREADABLE)
    if width * height > MAX_FRAME_PIXELS:
        raise VideoError(TOO_WIDE)
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    fps = float(rate) if 0 < float(rate) < 1000 else 25.0
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    if duration is not None and duration > MAX_DURATION_S + 0.5:
        raise VideoError(TOO_LONG)
    frames = stream.frames or (round(duration * fps) if duration else 0)
    return VideoInfo(width, height, fps, duration, frames)


@dataclass
class VideoResult:
    timeline: Timeline
    info: VideoInfo
    frames: int  # frames decoded (and written to the annotated copy)
    analysed: int  # frames analysed
    video_path: Path | None
    duration_s: float  # the time of the last frame decoded, plus one frame
    note: str = ""  # anything the user should know (the file ended in damaged data)


class _Writer:
    """An H.264 MP4 (VP9 WebM where this FFmpeg has no H.264 encoder) that browsers play, at the source's timing."""

    def __init__(self, path_stem: Path, width: int, height: int, rate: Fraction, time_base: Fraction):
        for codec, suffix, options in (
            ("libx264", ".mp4", {"preset": "veryfast", "crf": "23"}),
            ("libvpx-vp9", ".webm", {"deadline": "realtime", "cpu-used": "8", "row-mt": "1"}),
        ):
            if codec in av.codecs_available:
                break
        else:
            raise RuntimeError("this FFmpeg build has neither libx264 nor libvpx-vp9")
        self.path = path_stem.with_suffix(suffix)
        self.container = av.open(str(self.path), "w", options={"movflags": "+faststart"} if suffix == ".mp4" else {})
        self.stream = self.container.add_stream(codec, rate=rate, options=options)
        self.stream.width, self.stream.height = width - width % 2, height - height % 2  # yuv420p needs even sides
        self.stream.pix_fmt = "yuv420p"
        self.stream.codec_context.time_base = time_base
        self.last_pts = -1

    def write(self, rgb: np.ndarray, pts: int) -> None:
        frame = av.VideoFrame.from_ndarray(rgb[: self.stream.height, : self.stream.width], format="rgb24")
        frame.pts = max(pts, self.last_pts + 1)  # strictly increasing, whatever the source's timestamps did
        frame.time_base = self.stream.codec_context.time_base
        self.last_pts = frame.pts
        self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()


def analyze_video(
    recognizer: EmotionRecognizer,
    path: str | os.PathLike,
    out_stem: str | os.PathLike | None = None,
    *,
    rate: float = DEFAULT_RATE,
    min_face_size: int | None = None,
    threshold: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> VideoResult:
    """Track and classify the faces of a video file, frame by frame.

    `rate` frames per second are analysed (every frame of a slower video); the faces found are drawn on every
    frame until the next analysed one. With `out_stem`, the annotated copy is written beside it (`.mp4`, or `.webm`)
    at the source's frame timing. `progress(done, total)` is called as frames are decoded (`total` may be 0 when
    the file does not say). Raises VideoError, with a message for the user, for a file it cannot use (a video
    without faces is not an error here: its timeline is empty; NO_FACES is the message for it).
    """
    if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be a positive number of frames per second, got {rate!r}")
    container = open_video(path)
    try:
        info = probe(container)
        return _analyze(recognizer, container, info, out_stem, rate, min_face_size, threshold, progress)
    finally:
        container.close()


def _analyze(recognizer, container, info, out_stem, rate, min_face_size, threshold, progress) -> VideoResult:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    scale = min(1.0, WORK_SIDE / max(info.width, info.height))
    tracker = video_tracker(recognizer, min(rate, info.fps))
    timeline = Timeline()
    writer: _Writer | None = None
    step = 1.0 / rate
    tolerance = 0.5 / info.fps  # a frame within half a frame of its due time is analysed
    due, start, frames, analysed, note, last_time = 0.0, None, 0, 0, "", 0.0
    faces: list[TrackedFace] = []
    try:
        for frame in _frames(container, stream):
            if frame.time is None:
                time_s = frames / info.fps
            else:
                start = frame.time if start is None else start
                time_s = frame.time - start
            if time_s > MAX_DURATION_S + 0.5:  # the file did not say how long it is
                raise VideoError(TOO_LONG)
            last_time = time_s
            rgb = _to_rgb(frame, scale)
            if time_s + tolerance >= due:
                faces = [t for t in tracker.track(rgb, work_min_face(min_face_size, scale)) if t.face.confidence >= threshold]
                timeline.add(time_s, frames, faces, scale)
                analysed += 1
                due = max(due + step, time_s + step - tolerance)
            if out_stem is not None:
                if writer is None:
                    time_base = stream.time_base or Fraction(1, 1000)
                    writer = _Writer(Path(out_stem), rgb.shape[1], rgb.shape[0], stream.average_rate or Fraction(25), time_base)
                pts = round(time_s / writer.stream.codec_context.time_base)
                writer.write(annotate_tracked(recognizer, rgb, faces), pts)
            frames += 1
            if progress is not None:
                progress(frames, info.frames)
    except _Damaged:
        if not frames:
            raise VideoError(UNREADABLE) from None
        note = f"The file is damaged after {frames} frames; the video was analysed up to there."
    finally:
        if writer is not None:
            writer.close()
    if not frames:
        raise VideoError(NO_FRAMES)
    duration = last_time + 1 / info.fps
    return VideoResult(timeline, info, frames, analysed, writer.path if writer else None, duration, note)


class _Damaged(Exception):
    """Decoding stopped on invalid data."""


def _frames(container, stream) -> Iterable[av.VideoFrame]:
    try:
        yield from container.decode(stream)
    except (av.FFmpegError, ValueError, OverflowError) as error:
        raise _Damaged from error


def _to_rgb(frame: av.VideoFrame, scale: float) -> np.ndarray:
    """The frame as upright RGB uint8, shrunk by `scale`."""
    width, height = max(2, round(frame.width * scale)), max(2, round(frame.height * scale))
    rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA" if scale < 1 else None)
    turns = round((frame.rotation or 0) / 90) % 4  # phones store portrait videos sideways, with a rotation tag
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def work_min_face(min_face_size: int | None, scale: float) -> int | None:
    """A minimum face size given in a file's own pixels, in the pixels of its copy shrunk by `scale`."""
    if min_face_size is None:
        return None
    return max(SMALLEST_FACE, int(round(min_face_size * scale)))
