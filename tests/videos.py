"""Real videos for tests, made with PyAV from the example photos: two people who enter and leave the picture."""

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SIZE = (640, 480)  # width, height
FPS = 15
SECONDS = 6.0
# Who is in the picture when: (photo, first second in view, last second in view, left edge of the portrait).
PEOPLE = (("grace_hopper.jpg", 0.5, 3.5, 20), ("obama_smiling.jpg", 2.0, 5.0, 330))
PORTRAIT_HEIGHT = 300


def _portrait(name: str) -> np.ndarray:
    """An example photo as RGB, scaled to PORTRAIT_HEIGHT and cut to at most 290 px wide around its centre."""
    bgr = cv2.imread(str(EXAMPLES / name))
    height, width = bgr.shape[:2]
    scaled = cv2.resize(bgr, (round(width * PORTRAIT_HEIGHT / height), PORTRAIT_HEIGHT), interpolation=cv2.INTER_AREA)
    excess = max(0, scaled.shape[1] - 290)
    return cv2.cvtColor(scaled[:, excess // 2 : excess // 2 + 290], cv2.COLOR_BGR2RGB)


def two_people_video(
    path: Path, seconds: float = SECONDS, fps: int = FPS, codec: str = "mpeg4", scale: int = 1, people: bool = True,
    sideways: bool = False,
) -> Path:
    """Write the video: a grey room; Grace Hopper is in view from 0.5 to 3.5 s, Barack Obama from 2.0 to 5.0 s,
    each drifting a few pixels per frame. `scale` enlarges every frame (SIZE times `scale`); `people=False` leaves
    the room empty; `sideways` stores each frame turned a quarter clockwise, as a phone held upright stores its
    frames (the tag that turns them back for display is for the caller to add). Returns `path`."""
    portraits = [(_portrait(name), first, last, left) for name, first, last, left in PEOPLE] if people else []
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = SIZE[0] * scale, SIZE[1] * scale
        if sideways:
            stream.width, stream.height = stream.height, stream.width
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for index in range(round(seconds * fps)):
            time_s = index / fps
            canvas = np.full((SIZE[1], SIZE[0], 3), 110, np.uint8)
            for portrait, first, last, left in portraits:
                if first <= time_s <= last + 1e-9:
                    x = left + round(10 * np.sin(time_s * 2))
                    y = 90 + round(6 * np.cos(time_s * 3))
                    h, w = portrait.shape[:2]
                    canvas[y : y + h, x : x + w] = portrait
            if scale != 1:
                canvas = cv2.resize(canvas, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
            if sideways:
                canvas = np.ascontiguousarray(np.rot90(canvas, -1))
            frame = av.VideoFrame.from_ndarray(canvas, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def face_video(path: Path, seconds: float, fps: int = 30, size: tuple[int, int] = SIZE) -> Path:
    """One face (Grace Hopper) for `seconds`, moving slowly: the speed benchmark's input. H.264 in MP4."""
    portrait = _portrait("grace_hopper.jpg")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps), options={"preset": "veryfast"})
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for index in range(round(seconds * fps)):
            canvas = np.full((size[1], size[0], 3), 110, np.uint8)
            x = (size[0] - portrait.shape[1]) // 2 + round(40 * np.sin(index / fps))
            canvas[90 : 90 + portrait.shape[0], x : x + portrait.shape[1]] = portrait
            container.mux(stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")))
        container.mux(stream.encode(None))
    return path
