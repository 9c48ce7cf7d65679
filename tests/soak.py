"""Memory soak of the webcam stream: many 640x480 frames through the app's real webcam event, RSS sampled as it goes.

    python tests/soak.py --frames 5000 [--json FILE]

Importing `app` loads the model once and builds the Blocks without serving them. Each frame then goes through
`demo.process_api` for the `webcam` event, as the server runs it for a streamed frame, minus HTTP: Gradio's
preprocessing (the frame read from a JPEG file, as an upload), `annotate_webcam` with the session's `gr.State`
(one `FaceTracker` carried across frames), and postprocessing (the annotated frame encoded to JPEG in Gradio's
cache). Frames are an example photo letterboxed to 640x480, shifted by a few pixels and brightened a little
per frame, so that every frame differs as a camera's do.

After a warm-up (TensorFlow, allocator and caches settle), the RSS of this process is sampled every `--every`
frames. It fails (exit 1) when the RSS grows by more than `--max-growth` MB after the warm-up, or when its
least-squares slope exceeds `--max-slope` MB per 1000 frames (judged once 1000 frames or more follow the
warm-up). A 640x480 RGB frame is 0.9 MB, so keeping one frame in 200 alive would already show as 4.6 MB per
1000 frames (23 MB over 5000).
"""

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from loadtest import finish  # tests/ is on sys.path: this script's own folder

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "examples" / "grace_hopper.jpg"
WIDTH, HEIGHT = 640, 480
MIN_SLOPE_SPAN = 1000  # frames after the warm-up needed to judge the slope
CLEAN_EVERY = 500  # frames between cache clean-ups (the app's delete_cache does this every 10 minutes)


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process in MB, from /proc/PID/status (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def base_frame(photo: Path = PHOTO) -> np.ndarray:
    """The photo, RGB, scaled to fit 640x480 and letterboxed."""
    rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    scale = min(WIDTH / rgb.shape[1], HEIGHT / rgb.shape[0])
    small = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    top, left = (HEIGHT - small.shape[0]) // 2, (WIDTH - small.shape[1]) // 2
    frame[top : top + small.shape[0], left : left + small.shape[1]] = small
    return frame


def vary(frame: np.ndarray, index: int) -> np.ndarray:
    """Frame `index`: shifted by up to 6 px, brightened by 0-8 levels (a camera's jitter and exposure drift)."""
    dx, dy = round(6 * np.sin(index / 15)), round(4 * np.sin(index / 23))
    shifted = np.roll(frame, (dy, dx), axis=(0, 1))
    return cv2.add(shifted, np.full_like(shifted, index % 9))


def slope_per_1000(frames: list[int], rss: list[float]) -> float:
    """Least-squares slope of RSS (MB) against frame count, in MB per 1000 frames."""
    if len(frames) < 2:
        return 0.0
    return float(np.polyfit(np.asarray(frames, float), np.asarray(rss, float), 1)[0] * 1000)


async def soak(
    frames: int, warmup: int, every: int, min_face_size: int, detect_every: int, cache: Path, max_seconds: float | None
) -> dict:
    """Stream `frames` frames (fewer if `max_seconds` run out first) through the webcam event; the measurements."""
    import app  # loads the model and builds the Blocks; does not launch the server
    from gradio import processing_utils
    from gradio.state_holder import SessionState

    demo = app.demo
    event = next(fn for fn in demo.fns.values() if fn.api_name == "webcam")
    state = SessionState(demo)  # one browser session: its gr.State (the WebcamSession) persists across frames
    base = base_frame()
    rss_import = rss_mb()
    samples: list[tuple[int, float]] = []
    times: list[float] = []
    with_faces = 0
    started = time.perf_counter()
    done = 0
    for index in range(frames):
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            break
        # The browser's frame arrives as an image file in Gradio's cache, referenced by a FileData payload.
        path = processing_utils.save_img_array_to_cache(vary(base, index), str(cache), format="jpeg")
        payload = {"path": path, "meta": {"_type": "gradio.FileData"}}
        tick = time.perf_counter()
        out = await demo.process_api(
            event, [payload, None, min_face_size, 0.0, detect_every], state=state, session_hash="soak"
        )
        times.append(time.perf_counter() - tick)
        annotated = out["data"][0]
        if not (isinstance(annotated, dict) and Path(annotated["path"]).is_file()):
            raise RuntimeError(f"frame {index}: no annotated image in the output: {out['data']!r:.300}")
        with_faces += bool(state[event.inputs[1]._id].tracker.tracks)
        done = index + 1
        if done >= warmup and (done - warmup) % every == 0:
            samples.append((done, rss_mb()))
        if done % CLEAN_EVERY == 0:
            for entry in cache.iterdir():
                shutil.rmtree(entry, ignore_errors=True)
    elapsed = time.perf_counter() - started
    if not samples or samples[-1][0] != done:
        samples.append((done, rss_mb()))
    after = [(f, r) for f, r in samples if f >= warmup] or samples
    ms = np.asarray(times or [0.0]) * 1000
    return {
        "frames": done,
        "frames_asked": frames,
        "frame_size": [WIDTH, HEIGHT],
        "frames_with_a_face": with_faces,
        "warmup_frames": warmup,
        "seconds": round(elapsed, 1),
        "frames_per_s": round(done / elapsed, 1),
        "frame_ms_p50": round(float(np.percentile(ms, 50)), 1),
        "frame_ms_p95": round(float(np.percentile(ms, 95)), 1),
        "rss_after_import_mb": round(rss_import, 1),
        "rss_start_mb": round(after[0][1], 1),
        "rss_end_mb": round(after[-1][1], 1),
        "rss_max_mb": round(max(r for _, r in after), 1),
        "growth_mb": round(after[-1][1] - after[0][1], 1),
        "slope_mb_per_1000_frames": round(slope_per_1000(*zip(*after)), 2) if len(after) > 1 else 0.0,
        # Gradio remembers every file an event wrote (to delete them at shutdown): one path per output frame.
        "gradio_tracked_files": sum(len(files) for files in demo.temp_file_sets),
        "samples": [[f, round(r, 1)] for f, r in samples],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500, help="frames before the first RSS sample that counts")
    parser.add_argument("--every", type=int, default=100, help="frames between RSS samples")
    parser.add_argument("--min-face-size", type=int, default=None, help="default: the app's slider default")
    parser.add_argument(
        "--detect-every", type=int, default=1,
        help="detect faces every N frames; 1 (every frame, the app's default) is the heaviest path",
    )
    parser.add_argument("--max-growth", type=float, default=50.0, help="MB of RSS growth after the warm-up")
    parser.add_argument("--max-slope", type=float, default=5.0, help="MB per 1000 frames after the warm-up")
    parser.add_argument("--max-seconds", type=float, help="stop early after this long (the report says how many frames ran)")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    if args.frames <= args.warmup:
        parser.error("--frames must exceed --warmup")

    cache = Path(tempfile.mkdtemp(prefix="soak-"))
    os.environ.update(GRADIO_TEMP_DIR=str(cache), GRADIO_ANALYTICS_ENABLED="False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the Hub is unreachable here: use the bundled model at once
    sys.path.insert(0, str(ROOT))
    from emotion.detect import DEFAULT_MIN_FACE

    try:
        report = asyncio.run(
            soak(
                args.frames, args.warmup, args.every, args.min_face_size or DEFAULT_MIN_FACE, args.detect_every, cache,
                args.max_seconds,
            )
        )
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    problems = []
    if report["frames"] <= args.warmup:
        problems.append(f"only {report['frames']} frames ran: none after the {args.warmup}-frame warm-up")
    if report["growth_mb"] > args.max_growth:
        problems.append(f"RSS grew by {report['growth_mb']} MB after the warm-up (limit {args.max_growth})")
    span = report["frames"] - args.warmup  # a slope over fewer frames is noise: 0.5 MB over 100 frames reads as 5
    if span >= MIN_SLOPE_SPAN and report["slope_mb_per_1000_frames"] > args.max_slope:
        problems.append(f"RSS rises {report['slope_mb_per_1000_frames']} MB per 1000 frames (limit {args.max_slope})")
    report.update(max_growth_mb=args.max_growth, max_slope_mb_per_1000_frames=args.max_slope, problems=problems)

    print(
        f"{report['frames']} of {args.frames} frames in {report['seconds']} s ({report['frames_per_s']} frames/s, "
        f"p50 {report['frame_ms_p50']} ms, p95 {report['frame_ms_p95']} ms; {report['frames_with_a_face']} with a face)\n"
        f"RSS after import {report['rss_after_import_mb']} MB; after {args.warmup} warm-up frames "
        f"{report['rss_start_mb']} MB; at the end {report['rss_end_mb']} MB (max {report['rss_max_mb']} MB)\n"
        f"growth {report['growth_mb']} MB, slope {report['slope_mb_per_1000_frames']} MB per 1000 frames"
    )
    return finish(report, problems, args.json)


if __name__ == "__main__":
    sys.exit(main())
