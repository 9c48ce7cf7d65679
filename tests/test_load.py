"""Reliability, run for real: the load test (tests/loadtest.py) against the `app_server` app, and the memory soak of
the webcam stream (tests/soak.py). Each runs as a script, as one would by hand, and leaves its JSON report in
test-artifacts/ (load.json, soak.json). Together they take about 5 minutes.

The soak streams EMOTION_SOAK_FRAMES frames (default 5000, as the reliability requirement asks) and must complete
them all: EMOTION_SOAK_SECONDS (default 420) is only a safety cap, and a soak it cuts short fails. By hand:
python tests/soak.py --frames 5000 --json test-artifacts/soak.json
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
USERS, SECONDS = 20, 60
MAX_P95_S = 30.0  # see tests/loadtest.py: 16 queued + 2 running events, served 2 at a time, 3 s budget each
SOAK_FRAMES = int(os.environ.get("EMOTION_SOAK_FRAMES", "5000"))
# A safety cap, not a target: 5000 frames took about 150 s (32-38 frames/s) here, so this allows a machine 2.8x slower.
SOAK_SECONDS = float(os.environ.get("EMOTION_SOAK_SECONDS", "420"))
MAX_GROWTH_MB, MAX_SLOPE_MB = 50.0, 5.0  # after the warm-up; MB, and MB per 1000 frames (see tests/soak.py)


def run_script(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run a Python script from the checkout, printing its output (shown when a test fails)."""
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    print(result.stdout, result.stderr[-3000:], sep="\n")  # shown when a test fails
    return result


def test_20_users_for_60_s_get_answers_or_a_clear_queue_full(app_server, app_server_pid):
    report_path = ARTIFACTS / "load.json"
    report_path.unlink(missing_ok=True)
    args = ["tests/loadtest.py", "--url", app_server.url, "--users", str(USERS), "--seconds", str(SECONDS),
            "--max-p95", str(MAX_P95_S), "--json", str(report_path)]
    if app_server_pid is not None:
        args += ["--pid", str(app_server_pid)]
    result = run_script(args, timeout=SECONDS + 300)

    report = json.loads(report_path.read_text())
    assert report["users"] == USERS and report["wall_s"] >= SECONDS
    assert report["errors"] == 0, report["error_messages"]  # only "queue full" may refuse a call
    assert report["success_ratio"] > 0.5  # most calls succeed
    assert report["successes_min_per_user"] >= 1  # and no user is starved
    assert report["latency_p95_s"] < MAX_P95_S
    assert max(report["latency_p95_per_10s_s"]) < MAX_P95_S  # bounded all along, not only on average
    if app_server_pid is not None:
        assert report["app_rss_start_mb"] > 0 and report["app_rss_end_mb"] > 0
    assert result.returncode == 0


def test_memory_stays_flat_over_a_webcam_stream():
    report_path = ARTIFACTS / "soak.json"
    report_path.unlink(missing_ok=True)
    args = ["tests/soak.py", "--frames", str(SOAK_FRAMES), "--max-seconds", str(SOAK_SECONDS),
            "--max-growth", str(MAX_GROWTH_MB), "--max-slope", str(MAX_SLOPE_MB), "--json", str(report_path)]
    result = run_script(args, timeout=SOAK_SECONDS + 300)

    report = json.loads(report_path.read_text())
    assert report["frames"] == SOAK_FRAMES, f"only {report['frames']} frames before the {SOAK_SECONDS:.0f} s cap"
    assert report["frames_with_a_face"] >= 0.9 * report["frames"]  # the real path ran: a face found and tracked
    assert report["growth_mb"] <= MAX_GROWTH_MB
    assert report["slope_mb_per_1000_frames"] <= MAX_SLOPE_MB
    assert result.returncode == 0
