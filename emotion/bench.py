"""Speed and memory benchmark of the recognition pipeline, stage by stage.

    python -m emotion.bench [--json FILE] [--repeats N] [--quick] [--no-app] [--compare-fer]

Frames of 640x480 and 1280x720 are built from the photos in examples/: a portrait with its face blurred away (0
faces), the same portrait scaled so that its face is 250 px (1face) or 60 px (1small), and five face crops tiled
on it (5faces). With --compare-fer the `fer` package runs on each
frame in alternation with this project's pipeline (one of ours, one of fer's), so both see the same load. Each frame is
JPEG-encoded once, then every iteration times the stages of `EmotionRecognizer.detect` + `annotate` separately:
decode (JPEG bytes -> RGB with the app's decoder), detect, preprocess (crop + preprocess_face + stack), classify
(one batched call) and annotate; pipeline is detect to annotate (what `EmotionRecognizer.detect` +
`annotate` cost on a decoded image, the figure the targets are set on) and total adds decode. Medians and 95th percentiles exclude the warm-up iterations.
Cold costs run in fresh processes: importing the package and `EmotionRecognizer.load()`, and `python app.py`
from start to HTTP 200 and to its first /predict answer. Peak memory is the resident set high-water mark.
Machines are shared and noisy: compare numbers taken in one run, on an idle machine.
"""

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .detect import Box, FaceDetector
from .preprocess import FRAME_SCALE, crop_face
from .images import load_image
from .recognizer import EmotionRecognizer, face_from_probs

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
SIZES = ((640, 480), (1280, 720))
STAGES = ("decode", "detect", "preprocess", "classify", "annotate", "pipeline", "total")
PIPELINE = ("detect", "preprocess", "classify", "annotate")  # EmotionRecognizer.detect + annotate on a decoded image
JPEG_QUALITY = 90
DEFAULT_REPEATS, FRAME_BUDGET_S, MIN_REPEATS = 200, 6.0, 20  # default run: about 6 s per frame, a minute in all
CROP_MARGIN = 0.15  # context kept around a face pasted into the 5-face frames; the detector needs some
FACE_SIDES = {"1face": 250, "1small": 60}  # one-face frames: the face's box side in pixels (a large and a small face)
TARGETS = {  # name: (where the value sits in the result, limit, "max" or "min")
    # Issue 17: the whole pipeline at least 6x faster than `fer` on the same frames (with --compare-fer).
    "640x480_1face_speedup_vs_fer": (("fer", "640x480_1face", "speedup"), 6.0, "min"),
    "640x480_1small_speedup_vs_fer": (("fer", "640x480_1small", "speedup"), 6.0, "min"),
    "640x480_5faces_speedup_vs_fer": (("fer", "640x480_5faces", "speedup"), 6.0, "min"),
    "640x480_1face_pipeline_ms": (("frames", "640x480_1face", "stages", "pipeline", "median_ms"), 10.0, "max"),
    "640x480_5faces_pipeline_ms": (("frames", "640x480_5faces", "stages", "pipeline", "median_ms"), 15.0, "max"),
    "app_http_200_s": (("cold", "app", "http_200_s"), 3.0, "max"),
    "app_start_to_first_answer_s": (("cold", "app", "first_answer_s"), 15.0, "max"),
    "app_peak_rss_mb": (("cold", "app", "peak_rss_mb"), 400.0, "max"),
    "app_tensorflow_loaded": (("cold", "app", "tensorflow_loaded"), False, "max"),
    "peak_rss_mb": (("memory", "peak_rss_mb"), 1536.0, "max"),
}
# Runs in a fresh interpreter: import and model-load cost as the app pays them at start-up.
# Its peak memory is VmHWM: ru_maxrss would carry over the benchmark process's own peak through fork and exec.
LOAD_SCRIPT = """
import json, sys, time
started = time.perf_counter()
from emotion.recognizer import EmotionRecognizer
imported = time.perf_counter()
recognizer = EmotionRecognizer.load()
loaded = time.perf_counter()
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"import_s": imported - started, "load_s": loaded - imported, "source": recognizer.source,
                  "tensorflow_imported": "tensorflow" in sys.modules, "peak_rss_mb": int(hwm.split()[1]) / 1024}))
"""


def machine_info() -> dict:
    """CPU, load and package versions: the context every number below needs."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    versions = {}
    for package in ("tensorflow-cpu", "keras", "onnxruntime", "opencv-python-headless", "numpy", "pillow", "gradio"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "opencv_threads": cv2.getNumThreads(),
        "versions": versions,
    }


def example_photos() -> list[Path]:
    """The committed example photos."""
    return sorted(p for p in EXAMPLES.glob("*") if p.suffix.lower() in PHOTO_SUFFIXES)


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def backdrop(photo: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The photo stretched over the whole canvas and blurred beyond recognition (no face survives it)."""
    stretched = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(stretched, (0, 0), sigmaX=size[0] / 20)


def letterbox(photo: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The photo fitted inside the canvas, centred on its own blurred backdrop."""
    width, height = size
    canvas = backdrop(photo, size)
    scale = min(width / photo.shape[1], height / photo.shape[0])
    fitted = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    y, x = (height - fitted.shape[0]) // 2, (width - fitted.shape[1]) // 2
    canvas[y : y + fitted.shape[0], x : x + fitted.shape[1]] = fitted
    return canvas


def erase_faces(frame: np.ndarray, boxes: list[Box], fill: np.ndarray) -> np.ndarray:
    """The frame with every box (grown by half its size) replaced by the same region of `fill`."""
    out = frame.copy()
    for x, y, w, h in boxes:
        x0, y0 = max(0, x - w // 2), max(0, y - h // 2)
        out[y0 : y + h + h // 2, x0 : x + w + w // 2] = fill[y0 : y + h + h // 2, x0 : x + w + w // 2]
    return out


def tile_faces(frame: np.ndarray, crops: list[np.ndarray], count: int) -> np.ndarray:
    """`count` face crops pasted onto the frame in two rows, at sizes varying around 70% of a cell."""
    out = frame.copy()
    height, width = out.shape[:2]
    top = (count + 1) // 2
    for i in range(count):
        row, col = (0, i) if i < top else (1, i - top)
        cols = top if row == 0 else count - top
        cell_w, cell_h = width // cols, height // 2
        side = int(min(cell_w, cell_h) * (0.8 - 0.05 * (i % 3)))
        crop = crops[i % len(crops)]
        if (i // len(crops)) % 2:  # repeated faces are mirrored
            crop = crop[:, ::-1]
        crop = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
        x, y = col * cell_w + (cell_w - side) // 2, row * cell_h + (cell_h - side) // 2
        out[y : y + side, x : x + side] = crop
    return out


def place_face(photo: np.ndarray, box: Box, size: tuple[int, int], side: int) -> np.ndarray:
    """The photo scaled so that the face at `box` is `side` pixels wide, that face centred on a `size` canvas over
    the photo's blurred backdrop."""
    width, height = size
    scale = side / max(box[2], box[3])
    scaled = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas = backdrop(photo, size)
    # Where the scaled photo's top-left corner lands so that the face centre is the canvas centre.
    x0 = round(width / 2 - (box[0] + box[2] / 2) * scale)
    y0 = round(height / 2 - (box[1] + box[3] / 2) * scale)
    cx0, cy0 = max(0, x0), max(0, y0)
    cx1, cy1 = min(width, x0 + scaled.shape[1]), min(height, y0 + scaled.shape[0])
    canvas[cy0:cy1, cx0:cx1] = scaled[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    return canvas


def make_frames(detector: FaceDetector) -> tuple[dict[str, tuple[np.ndarray, int]], list[str]]:
    """{"640x480_1face": (rgb, intended face count), ...} and the photos they came from."""
    photos = example_photos()
    images = [read_rgb(p) for p in photos]
    found = [detector.detect(image) for image in images]
    # Crops of portraits only: around a face in a group or a collage, the crop would show parts of its neighbours.
    crops = [crop_face(image, boxes[0], FRAME_SCALE * (1 + 2 * CROP_MARGIN))
             for image, boxes in zip(images, found) if len(boxes) == 1]
    if not crops:
        raise RuntimeError(f"the detector finds no face in {[str(p) for p in photos]}")
    portraits = [image for image, boxes in zip(images, found) if len(boxes) == 1]
    portrait_boxes = [boxes[0] for boxes in found if len(boxes) == 1]
    frames = {}
    for size in SIZES:
        # The first portrait whose face-erased frame holds no false face, so that the 0-face rows time the no-face
        # path (BlazeFace sees a face at 0.51 in the astronaut's mission badge, for one).
        for portrait, box in zip(portraits, portrait_boxes):
            one = letterbox(portrait, size)
            none = erase_faces(one, detector.detect(one), backdrop(portrait, size))
            if not detector.detect(none):
                break
        else:
            raise RuntimeError("every example portrait keeps a false face once its face is erased")
        name = f"{size[0]}x{size[1]}"
        frames[f"{name}_0faces"] = (none, 0)
        for kind, side in FACE_SIDES.items():
            frames[f"{name}_{kind}"] = (place_face(portrait, box, size, side), 1)
        frames[f"{name}_5faces"] = (tile_faces(none, crops, 5), 5)
    return frames, [str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p) for p in photos]


def encode_jpeg(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok
    return data.tobytes()


def run_once(recognizer: EmotionRecognizer, decode: Callable[[bytes], np.ndarray], jpeg: bytes) -> tuple[dict, int]:
    """One pass of the pipeline split into timed stages (seconds), and the number of faces it found.

    The stages of `EmotionRecognizer.detect` (find_faces, preprocess_boxes, classify_faces) + `annotate`.
    """
    times = {}
    clock = start = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        times[stage], clock = now - clock, now

    rgb = decode(jpeg)
    lap("decode")
    boxes, whole_image = recognizer.find_faces(rgb)
    lap("detect")
    batch = recognizer.preprocess_boxes(rgb, boxes)
    lap("preprocess")
    faces = [face_from_probs(box, p, whole_image) for box, p in zip(boxes, recognizer.classify_faces(batch))]
    lap("classify")
    recognizer.annotate(rgb, faces)
    lap("annotate")
    times["pipeline"] = sum(times[stage] for stage in PIPELINE)
    times["total"] = clock - start
    return times, len(faces)


def time_frame(
    recognizer: EmotionRecognizer, decode: Callable, jpeg: bytes, repeats: int, warmup: int, budget_s: float | None,
    alongside: Callable[[], tuple[float, int]] | None = None,
) -> dict:
    """Median and p95 per stage over `repeats` timed runs (fewer if `budget_s` seconds run out first, but at
    least MIN_REPEATS) after `warmup` untimed ones, and the face counts the timed runs found.

    `alongside` (seconds and faces found of another pipeline on the same frame) runs after each of ours, so that
    both sample the same moments of a busy machine: its median ms and faces found come back as "alongside"."""
    for _ in range(warmup):
        run_once(recognizer, decode, jpeg)
        if alongside:
            alongside()
    results = repeat_within(lambda: (run_once(recognizer, decode, jpeg), alongside and alongside()), repeats, budget_s)
    runs, counts = [times for (times, _), _ in results], {count for (_, count), _ in results}
    stages = {}
    for stage in STAGES:
        ms = np.array([run[stage] for run in runs]) * 1000
        stages[stage] = {"median_ms": _sig(np.median(ms)), "p95_ms": _sig(np.percentile(ms, 95))}
    fps = _sig(1000 / stages["total"]["median_ms"])
    timing = {"faces_staged": sorted(counts), "stages": stages, "fps": fps, "repeats": len(runs)}
    if alongside:
        other = [result for _, result in results]
        timing["alongside"] = {"median_ms": _sig(np.median([t for t, _ in other]) * 1000),
                               "faces_found": other[-1][1]}
    return timing


def repeat_within(run: Callable[[], Any], repeats: int, budget_s: float | None) -> list:
    """The results of `repeats` calls of `run` (fewer if `budget_s` seconds run out first, but at least MIN_REPEATS)."""
    deadline = time.perf_counter() + budget_s if budget_s else float("inf")
    results = []
    while len(results) < repeats and (len(results) < MIN_REPEATS or time.perf_counter() < deadline):
        results.append(run())
    return results


def _sig(value: float) -> float:
    """`value` to 4 significant digits (a 0-face preprocess stage takes about a microsecond)."""
    return float(f"{value:.4g}")


def bench_frames(
    recognizer: EmotionRecognizer, decode: Callable, frames: dict, repeats: int, warmup: int, budget_s: float | None,
    fer: Any = None,
) -> tuple[dict, dict]:
    """Per frame: faces intended and found (by `EmotionRecognizer.detect` itself), JPEG size and stage timings; and,
    with a `fer` detector, fer's median ms per frame, timed in alternation with ours, and the speed-up."""
    results, fer_results = {}, {}
    for name, (rgb, intended) in frames.items():
        jpeg = encode_jpeg(rgb)  # once per frame: every iteration decodes the same bytes
        found = len(recognizer.detect(decode(jpeg)))
        if found != intended:
            print(f"warning: {name} was built with {intended} faces but the detector finds {found}", file=sys.stderr)
        alongside = None if fer is None else fer_runner(fer, rgb)
        timing = time_frame(recognizer, decode, jpeg, repeats, warmup, budget_s, alongside)
        if fer is not None:
            theirs = timing.pop("alongside")
            ours = timing["stages"]["pipeline"]["median_ms"]
            fer_results[name] = {**theirs, "speedup": round(theirs["median_ms"] / ours, 2)}
        results[name] = {"faces_intended": intended, "faces_found": found, "jpeg_bytes": len(jpeg), **timing}
    return results, fer_results


def fer_detector() -> Any:
    """The `fer` package's detector with default settings (its Haar cascade + mini-Xception). Not a dependency of this
    project: install it beside it to compare (see README)."""
    from fer.fer import FER  # noqa: PLC0415 - optional, imported only when asked for

    return FER()


def fer_runner(detector: Any, rgb: np.ndarray) -> Callable[[], tuple[float, int]]:
    """One timed call of `fer`'s whole pipeline on the frame: (seconds, faces found)."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # fer reads images in OpenCV's BGR order

    def timed() -> tuple[float, int]:
        started = time.perf_counter()
        found = detector.detect_emotions(bgr)
        return time.perf_counter() - started, len(found)

    return timed


def cold_model_load() -> dict:
    """Import time and `EmotionRecognizer.load()` time in a fresh interpreter (Hub offline, as in a sandbox)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", LOAD_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**{k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}, "process_s": round(wall, 3)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peak_rss_of(pid: int) -> float | None:
    """VmHWM (peak resident set) of a live process, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def wait_for_http(url: str, process: subprocess.Popen, timeout: float) -> None:
    """Poll `url` until it answers 200; raise if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def first_answer(client, image: dict, process: subprocess.Popen, timeout: float) -> dict:
    """Call /predict until it answers; the failed calls before that are reported, not hidden."""
    from gradio_client.exceptions import AppError

    deadline, failed, first_error = time.monotonic() + timeout, 0, None
    while True:
        try:
            client.predict(image, api_name="/predict")
            return {"failed_calls_before_first_answer": failed, "first_error": first_error} if failed else {}
        except AppError as error:
            failed, first_error = failed + 1, first_error or str(error)[:200]
            if process.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def cold_app(example: Path, requests: int = 5, timeout: float = 180) -> dict:
    """Start `python app.py` on a free loopback port: seconds to HTTP 200 on /, to the first /predict answer,
    the median of a few more answers, and the app's peak RSS."""
    from gradio_client import Client, handle_file

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryFile() as log, tempfile.TemporaryDirectory() as scratch:
        # A fresh example cache and upload folder per run: the cold start a new Space pays, and no files left behind.
        env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1",
               "GRADIO_ANALYTICS_ENABLED": "False", "TF_CPP_MIN_LOG_LEVEL": "2",
               "GRADIO_EXAMPLES_CACHE": f"{scratch}/examples", "GRADIO_TEMP_DIR": f"{scratch}/tmp"}
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_http(url, process, timeout)
            http_s = time.perf_counter() - started
            client = Client(url, verbose=False, download_files=f"{scratch}/client", analytics_enabled=False)
            failures = first_answer(client, handle_file(str(example)), process, timeout)
            first_s = time.perf_counter() - started
            warm = []
            for _ in range(requests):
                tick = time.perf_counter()
                client.predict(handle_file(str(example)), api_name="/predict")
                warm.append(time.perf_counter() - tick)
            maps = Path(f"/proc/{process.pid}/maps").read_text()
            return {"http_200_s": round(http_s, 3), "first_answer_s": round(first_s, 3),
                    "warm_request_median_ms": round(float(np.median(warm)) * 1000, 1),
                    "peak_rss_mb": round(peak_rss_of(process.pid) or 0, 1),
                    "tensorflow_loaded": "/tensorflow/" in maps, "example": example.name, **failures}
        except Exception as error:  # noqa: BLE001 - report why, keep the rest of the benchmark
            log.seek(0)
            tail = log.read().decode(errors="replace").strip().splitlines()[-3:]
            return {"error": f"{type(error).__name__}: {error}", "log_tail": tail}
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def check_targets(result: dict) -> dict:
    """Each target's measured value, limit and pass/fail (None where the value was not measured)."""
    checks = {}
    for name, (path, limit, kind) in TARGETS.items():
        value = result
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        passed = None if value is None else bool(value <= limit if kind == "max" else value >= limit)
        checks[name] = {"value": value, "limit": limit, "kind": kind, "pass": passed}
    return checks


def format_report(result: dict) -> str:
    """The human-readable table: one row per frame, "median/p95" ms per stage, then cold costs and targets."""
    m = result["machine"]
    lines = [f"{m['cpu_model']}, {m['cpus_usable']} CPUs, load average {m['load_average_1m']} at start, "
             f"{m['load_average_1m_end']} at end (above 0.5 or so, other work slows every number down); "
             f"model {result['model']} on {result['runtime']}; decoder {result['decoder']}",
             f"{'frame':<16} {'faces':>6} " + " ".join(f"{s:>13}" for s in STAGES) + f" {'fps':>6} {'runs':>5}",
             f"{'':<16} {'found':>6} " + " ".join(f"{'med/p95 ms':>13}" for _ in STAGES)]
    for name, frame in result["frames"].items():
        mark = "" if frame["faces_found"] == frame["faces_intended"] else f" (!= {frame['faces_intended']})"
        stages = frame["stages"]
        cells = " ".join(f"{stages[s]['median_ms']:>6.2f}/{stages[s]['p95_ms']:<6.2f}" for s in STAGES)
        lines.append(f"{name:<16} {frame['faces_found']:>6} {cells} {frame['fps']:>6.1f} {frame['repeats']:>5}{mark}")
    for name, fer in result.get("fer", {}).items():
        ours = result["frames"][name]["stages"]["pipeline"]["median_ms"]
        lines.append(f"fer {name}: {fer['median_ms']:.1f} ms ({fer['faces_found']} faces), "
                     f"{fer['speedup']:.1f}x our pipeline's {ours:.2f} ms")
    for name, cold in result["cold"].items():
        lines.append(f"cold {name}: " + ", ".join(f"{k} {v}" for k, v in cold.items()))
    lines.append("memory: " + ", ".join(f"{k} {v}" for k, v in result["memory"].items()))
    for name, check in result["targets"].items():
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[check["pass"]]
        relation = "<=" if check["kind"] == "max" else ">="
        lines.append(f"target {name} {relation} {check['limit']}: {check['value']} {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emotion.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed runs per frame (default: up to {DEFAULT_REPEATS} within {FRAME_BUDGET_S:.0f} s)")
    parser.add_argument("--quick", action="store_true", help="a few seconds: 5 runs per frame, no cold-load process")
    parser.add_argument("--no-app", action="store_true", help="skip starting app.py")
    parser.add_argument("--compare-fer", action="store_true",
                        help="also time the `fer` package on the same frames (it must be importable)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else DEFAULT_REPEATS)
    budget = None if args.repeats or args.quick else FRAME_BUDGET_S
    warmup = 2 if args.quick else 10

    recognizer = EmotionRecognizer.load()
    decode, decoder_name = load_image, "emotion.images.load_image"
    frames, photos = make_frames(recognizer.detector)
    result = {"machine": machine_info(), "model": recognizer.source, "runtime": recognizer.classifier.runtime,
              "decoder": decoder_name, "photos": photos, "warmup": warmup}
    fer = fer_detector() if args.compare_fer else None
    result["frames"], fer_results = bench_frames(recognizer, decode, frames, repeats, warmup, budget, fer)
    if fer is not None:
        result["fer"] = fer_results
    result["cold"] = {
        "model_load": {"skipped": "--quick"} if args.quick else cold_model_load(),
        "app": {"skipped": "--no-app"} if args.no_app else cold_app(example_photos()[0]),
    }
    bench_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    app_mb = result["cold"]["app"].get("peak_rss_mb")
    result["memory"] = {"bench_peak_rss_mb": round(bench_mb, 1), "app_peak_rss_mb": app_mb,
                        "peak_rss_mb": round(max(bench_mb, app_mb or 0), 1)}
    result["machine"]["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    result["targets"] = check_targets(result)
    print(format_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
