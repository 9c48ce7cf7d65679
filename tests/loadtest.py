"""Load test of /predict: concurrent gradio_client users on loopback, each calling it in a loop until a deadline.

    python tests/loadtest.py [--url URL] [--users 20] [--seconds 60] [--json FILE] [--pid PID]

Without --url it starts `python app.py` itself on a free loopback port (offline, bundled model) and stops it at
the end. Each user is a thread with its own `gradio_client.Client`, sending the example photos in turn.

A full queue is not an error, when the app says so clearly: the app queues at most 16 events
(`demo.queue(max_size=16)`), and at the 17th Gradio answers POST /queue/join with HTTP 503, which gradio_client
raises as `QueueError("Queue is full! Please try again.")` (a 503 can also mean "queue stopped", at shutdown).
Those count as `queue_full`; the user waits 0.5-1.5 s, as a polite client would, and tries again. Any other
exception, or a malformed result, is an error.

Exit status 1 on any error, on no success at all, or when the p95 latency exceeds --max-p95 (default 30 s). The
bound follows from the queue: a call that gets in waits behind at most 16 queued and 2 running events, served 2 at
a time, so about 9 predictions before its own: with a budget of 3 s per prediction (6x the ~0.5 s a lone call
takes end to end on these 2 cores, for CPU shared with 20 client threads and maybe a training run), 10 x 3 s = 30 s.
The app's RSS (VmRSS) is sampled once a second when the script started the app or was given --pid.
"""

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gradio_client import Client, handle_file
from gradio_client.utils import QueueError

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = sorted(str(p) for p in (ROOT / "examples").glob("*.jpg"))
QUEUE_FULL_MESSAGE = "Queue is full"  # gradio_client/client.py: QueueError("Queue is full! Please try again.")
APP_START_TIMEOUT = 180  # seconds: the 2 cores may be shared with a training run
WINDOW = 10.0  # seconds per window of the latency-over-time report
HTTP_TIMEOUT_S = 60.0  # per HTTP request of a call (upload, join, download): twice the default --max-p95


def is_queue_full(error: BaseException) -> bool:
    """Whether `error` is gradio_client's report of the server's HTTP 503 "queue is full"."""
    return isinstance(error, QueueError) and str(error).startswith(QUEUE_FULL_MESSAGE)


def rss_mb(pid: int) -> float | None:
    """Resident set size of process `pid` in MB (VmRSS in /proc/PID/status), None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def finish(report: dict, problems: list[str], json_path: Path | None) -> int:
    """Print each problem, write the JSON report if asked; the exit status (1 if any problem). Shared with soak.py."""
    for problem in problems:
        print("FAIL:", problem)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2))
    return 1 if problems else 0


def start_app(log_path: Path) -> tuple[subprocess.Popen, str]:
    """`python app.py` on a free loopback port, offline; returns the process and its URL once it answers."""
    port = free_port()
    env = dict(
        os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), HF_HUB_OFFLINE="1",
        GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(log_path.parent / "gradio"),
        GRADIO_EXAMPLES_CACHE=str(log_path.parent / "cached_examples"),
    )
    url = f"http://127.0.0.1:{port}/"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + APP_START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.5)
    stop_app(process)
    raise RuntimeError(f"app.py did not start:\n{log_path.read_text()[-3000:]}")


def stop_app(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class UserStats:
    calls: list[tuple[float, float]] = field(default_factory=list)  # (start, latency) in s, successes only
    queue_full: int = 0
    errors: int = 0
    messages: list[str] = field(default_factory=list)  # the first few errors

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.messages) < 3:
            self.messages.append(message[:300])


def user(index: int, url: str, start: threading.Barrier, clock: dict, stats: UserStats, downloads: str) -> None:
    """One user: its own Client, then /predict on the example photos in turn until the deadline."""
    try:
        # Each HTTP request may take up to HTTP_TIMEOUT_S: gradio_client's own 20 s is less than the p95 bound,
        # so on a starved machine it gave up on uploads and downloads the app was still serving.
        client = Client(
            url, verbose=False, download_files=downloads, analytics_enabled=False,
            httpx_kwargs={"timeout": HTTP_TIMEOUT_S},
        )
    except Exception as error:  # noqa: BLE001 (any failure to connect is an error of the run)
        stats.error(f"connect: {type(error).__name__}: {error}")
        client = None
    start.wait()  # everyone starts together, once every client is connected
    sent = 0
    while client is not None and time.monotonic() < clock["deadline"]:
        photo = PHOTOS[(index + sent) % len(PHOTOS)]
        sent += 1
        began = time.monotonic()
        try:
            annotated, _, faces = client.predict(handle_file(photo), api_name="/predict")
        except Exception as error:  # noqa: BLE001 (classified below: queue full or error)
            if is_queue_full(error):
                stats.queue_full += 1
                time.sleep(random.uniform(0.5, 1.5))
            else:
                stats.error(f"{Path(photo).name}: {type(error).__name__}: {error}")
            continue
        latency = time.monotonic() - began
        if isinstance(faces, list) and isinstance(annotated, str) and Path(annotated).is_file():
            stats.calls.append((began - clock["start"], latency))
        else:
            stats.error(f"{Path(photo).name}: malformed result {annotated!r:.100} {faces!r:.100}")


def run(url: str, users: int, seconds: float, pid: int | None) -> dict:
    """Run the load; return the report (latencies in seconds, RSS in MB)."""
    stats = [UserStats() for _ in range(users)]
    clock: dict[str, float] = {}

    def go() -> None:  # runs once, when every user is connected and waiting
        clock["start"] = time.monotonic()
        clock["deadline"] = clock["start"] + seconds

    start = threading.Barrier(users, action=go)
    rss = [value] if pid is not None and (value := rss_mb(pid)) is not None else []
    with tempfile.TemporaryDirectory(prefix="loadtest-") as downloads:
        threads = [
            threading.Thread(target=user, args=(i, url, start, clock, stats[i], downloads), daemon=True)
            for i in range(users)
        ]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            time.sleep(1.0)
            if pid is not None and (value := rss_mb(pid)) is not None:
                rss.append(value)
        wall = time.monotonic() - clock.get("start", time.monotonic())

    calls = sorted(call for s in stats for call in s.calls)
    latencies = np.array([latency for _, latency in calls]) if calls else np.zeros(1)
    windows = {}
    for began, latency in calls:
        windows.setdefault(int(began // WINDOW), []).append(latency)
    successes, queue_full, errors = len(calls), sum(s.queue_full for s in stats), sum(s.errors for s in stats)
    return {
        "url": url,
        "users": users,
        "seconds": seconds,
        "wall_s": round(wall, 1),
        "attempts": successes + queue_full + errors,
        "successes": successes,
        "queue_full": queue_full,
        "errors": errors,
        "error_messages": [m for s in stats for m in s.messages][:10],
        "successes_min_per_user": min(len(s.calls) for s in stats),
        "success_ratio": round(successes / max(1, successes + queue_full + errors), 3),
        "throughput_per_s": round(successes / wall, 2) if wall > 0 else 0.0,
        "latency_p50_s": round(float(np.percentile(latencies, 50)), 2),
        "latency_p95_s": round(float(np.percentile(latencies, 95)), 2),
        "latency_max_s": round(float(latencies.max()), 2),
        "latency_p95_per_10s_s": [round(float(np.percentile(w, 95)), 2) for _, w in sorted(windows.items())],
        "app_rss_start_mb": round(rss[0], 1) if rss else None,
        "app_rss_end_mb": round(rss[-1], 1) if rss else None,
        "app_rss_max_mb": round(max(rss), 1) if rss else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="the app to load (default: start python app.py on loopback)")
    parser.add_argument("--pid", type=int, help="the app's process id, to sample its RSS (implied without --url)")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-p95", type=float, default=30.0, help="seconds (see the module docstring)")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="loadtest-app-") as tmp:
        process = None
        url, pid = args.url, args.pid
        if url is None:
            process, url = start_app(Path(tmp) / "app.log")
            pid = process.pid
        try:
            report = run(url, args.users, args.seconds, pid)
        finally:
            if process is not None:
                stop_app(process)

    problems = []
    if report["errors"]:
        problems.append(f"{report['errors']} errors other than 'queue full': {report['error_messages']}")
    if not report["successes"]:
        problems.append("no call succeeded")
    if report["latency_p95_s"] > args.max_p95:
        problems.append(f"p95 latency {report['latency_p95_s']} s exceeds {args.max_p95} s")
    report.update(max_p95_s=args.max_p95, problems=problems)

    print(
        f"{report['users']} users for {report['seconds']:.0f} s ({report['wall_s']} s with the last calls): "
        f"{report['successes']} successes, {report['queue_full']} 'queue full', {report['errors']} errors; "
        f"{report['throughput_per_s']} calls/s\n"
        f"latency p50 {report['latency_p50_s']} s, p95 {report['latency_p95_s']} s, max {report['latency_max_s']} s; "
        f"p95 per 10 s: {report['latency_p95_per_10s_s']}"
    )
    if report["app_rss_start_mb"] is not None:
        print(f"app RSS {report['app_rss_start_mb']} MB at the start, {report['app_rss_end_mb']} MB at the end "
              f"(max {report['app_rss_max_mb']} MB)")
    return finish(report, problems, args.json)


if __name__ == "__main__":
    sys.exit(main())
