"""`python -m emotion.bench --quick`: every frame and stage is measured and the frames hold the faces they should.

No timing assertions: the speed targets are what the benchmark itself reports, not what a unit test enforces.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from emotion.bench import FACE_SIDES, SIZES, STAGES, TARGETS, place_face

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_writes_every_frame_and_stage(tmp_path):
    out = tmp_path / "bench.json"
    env = {"HF_HUB_OFFLINE": "1", "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "emotion.bench", "--quick", "--no-app", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "640x480_1face" in result.stdout and "fps" in result.stdout
    report = json.loads(out.read_text())

    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["versions"]["onnxruntime"]
    assert report["decoder"] == "emotion.images.load_image"
    names = {f"{w}x{h}_{kind}" for w, h in SIZES for kind in ("0faces", *FACE_SIDES, "5faces")}
    assert set(report["frames"]) == names
    for name, frame in report["frames"].items():
        assert frame["faces_found"] == frame["faces_intended"], name
        assert frame["faces_staged"] == [frame["faces_intended"]], name  # the timed stages find the same faces
        assert set(frame["stages"]) == set(STAGES), name
        for stage, stats in frame["stages"].items():
            assert 0 < stats["median_ms"] <= stats["p95_ms"], (name, stage)
        assert frame["fps"] > 0
    assert report["cold"]["app"] == {"skipped": "--no-app"}
    assert report["memory"]["bench_peak_rss_mb"] > 0
    assert set(report["targets"]) == set(TARGETS)
    assert report["targets"]["640x480_1face_pipeline_ms"]["pass"] in (True, False)
    assert report["targets"]["app_start_to_first_answer_s"]["pass"] is None
    assert report["targets"]["640x480_1small_speedup_vs_fer"]["pass"] is None  # fer was not asked for


def test_a_placed_face_has_the_size_asked_for():
    from emotion.bench import example_photos, read_rgb
    from emotion.detect import FaceDetector

    detector = FaceDetector(24)
    photo = read_rgb(next(p for p in example_photos() if p.name == "grace_hopper.jpg"))
    (box,) = detector.detect(photo)
    for side in FACE_SIDES.values():
        frame = place_face(photo, box, (640, 480), side)
        (found,) = detector.detect(frame)
        assert abs(max(found[2:]) - side) <= 0.1 * side
        assert abs(found[0] + found[2] / 2 - 320) < 0.1 * side and abs(found[1] + found[3] / 2 - 240) < 0.1 * side


def test_a_pipeline_timed_alongside_alternates_with_ours():
    import time

    from emotion.bench import encode_jpeg, example_photos, read_rgb, time_frame
    from emotion.images import load_image
    from emotion.recognizer import EmotionRecognizer

    recognizer = EmotionRecognizer.load(repo_id="bundled")
    photo = read_rgb(next(p for p in example_photos() if p.name == "grace_hopper.jpg"))
    calls = []

    def other() -> tuple[float, int]:  # a second real pipeline: ours again, at a smaller minimum face
        started = time.perf_counter()
        found = len(recognizer.detect(photo, 24))
        calls.append(found)
        return time.perf_counter() - started, found

    timing = time_frame(recognizer, load_image, encode_jpeg(photo), repeats=3, warmup=1, budget_s=None,
                        alongside=other)
    assert timing["repeats"] == len(calls) - 1 and timing["faces_staged"] == [1]  # one warm-up call, then one each
    assert timing["alongside"]["faces_found"] == 1 and timing["alongside"]["median_ms"] > 0
