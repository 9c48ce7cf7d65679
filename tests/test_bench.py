"""`python -m emotion.bench --quick`: every frame and stage is measured and the frames hold the faces they should.

No timing assertions: the speed targets are what the benchmark itself reports, not what a unit test enforces.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from emotion.bench import FACE_COUNTS, SIZES, STAGES, TARGETS

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

    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["versions"]["tensorflow-cpu"]
    assert report["decoder"] == "emotion.images.load_image"
    names = {f"{w}x{h}_{n}{'face' if n == 1 else 'faces'}" for w, h in SIZES for n in FACE_COUNTS}
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
