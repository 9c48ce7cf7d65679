"""Under CI (the environment variable CI set, as .ci/run does), a missing tool fails the run instead of skipping."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent


def test_a_missing_tool_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-tool is not installed"):
        require_tool("no-such-tool", None)


def test_a_missing_tool_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="no-such-tool is not installed, and CI is set"):
        require_tool("no-such-tool", None)
    assert require_tool("ffmpeg", "/usr/bin/ffmpeg") == "/usr/bin/ffmpeg"


def test_ci_run_without_ffmpeg_fails_at_once(tmp_path):
    # A run whose PATH holds no ffmpeg: under CI it stops before any test, with a non-zero status.
    env = dict(os.environ, CI="1", PATH=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_labels.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "CI is set, but these tools are missing: ffmpeg" in result.stdout + result.stderr


def test_ci_run_sets_ci():
    assert "export CI=1" in (ROOT / ".ci" / "run").read_text()
