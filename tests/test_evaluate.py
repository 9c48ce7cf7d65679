import json
import shutil
import subprocess
import sys

from emotion import evaluate
from emotion.model_store import BUNDLED_DIR
from fakedata import make_face_folders


def test_evaluate_prints_the_table_and_writes_json(tmp_path, capsys):
    make_face_folders(tmp_path / "val", per_class=3, labels=("angry", "happy", "surprise"))  # missing classes allowed
    out = tmp_path / "metrics.json"
    assert evaluate.main(["--data", str(tmp_path / "val"), "--model", str(BUNDLED_DIR), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "macro avg" in printed and "accuracy" in printed
    metrics = json.loads(out.read_text())
    assert {"accuracy", "macro_f1", "loss", "per_class"} <= set(metrics)
    assert metrics["samples"] == 9 and metrics["per_class"]["disgust"]["support"] == 0
    assert 0 <= metrics["accuracy"] <= 1


def test_a_named_model_that_cannot_load_is_an_error_not_a_fallback(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    make_face_folders(tmp_path / "val", per_class=1)
    assert evaluate.main(["--data", str(tmp_path / "val"), "--model", "runs/typo"]) == 2
    assert "Cannot load --model runs/typo" in capsys.readouterr().err


def test_evaluate_command_line(tmp_path):
    make_face_folders(tmp_path / "set", per_class=2)
    shutil.rmtree(tmp_path / "set" / "fear")
    result = subprocess.run(
        [sys.executable, "-m", "emotion.evaluate", "--data", str(tmp_path / "set"), "--json", str(tmp_path / "m.json")],
        capture_output=True, text=True, timeout=120, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "bundled" in result.stdout
    assert json.loads((tmp_path / "m.json").read_text())["samples"] == 12
