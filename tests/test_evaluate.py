import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from emotion import evaluate
from emotion.model_store import BUNDLED_DIR
from fakedata import make_face_folders

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


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


def write_votes(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "split,label,file,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
    path.write_text(header + "".join(f"val,x,{name}.jpg,{votes}\n" for name, votes in rows))


def test_ferplus_labels_score_the_majority_and_leave_out_ties(tmp_path, capsys):
    data = make_face_folders(tmp_path / "fer2013-raw" / "val", per_class=2, labels=("angry", "happy"))
    # The faces' folders say angry and happy; FER+ says: 0.png is neutral everywhere, 1.png is a tie (left out).
    # (make_face_folders names files 0.png, 1.png in every folder, and a stem names one face: both folders share it.)
    write_votes(tmp_path / "fer2013" / "ferplus_votes.csv",
                [("0", "8,1,0,0,1,0,0,0,0,0"), ("1", "5,5,0,0,0,0,0,0,0,0")])
    out = tmp_path / "m.json"
    args = ["--data", str(data), "--model", str(BUNDLED_DIR), "--labels", "ferplus", "--json", str(out)]
    assert evaluate.main(args) == 0
    metrics = json.loads(out.read_text())
    assert metrics["samples"] == 2 and metrics["labels"] == "ferplus"  # only the two 0.png faces are scored
    assert metrics["per_class"]["neutral"]["support"] == 2 and metrics["per_class"]["angry"]["support"] == 0
    assert "balanced accuracy" in capsys.readouterr().out


def test_ferplus_labels_without_a_votes_file_are_a_clear_error(tmp_path, capsys):
    data = make_face_folders(tmp_path / "val", per_class=1, labels=("angry",))
    assert evaluate.main(["--data", str(data), "--model", str(BUNDLED_DIR), "--labels", "ferplus"]) == 2
    assert "--votes" in capsys.readouterr().err


def test_end_to_end_reads_photos_of_any_format_and_counts_no_face_as_wrong(tmp_path):
    """Real photos, PNG and JPEG, through EmotionRecognizer.detect: the smiling faces are read as happy, and a photo
    with no face is a miss that lowers accuracy."""
    happy = tmp_path / "photos" / "happy"
    happy.mkdir(parents=True)
    shutil.copy(EXAMPLES_DIR / "obama_smiling.jpg", happy / "obama.jpg")
    rgb = cv2.imread(str(EXAMPLES_DIR / "obama_smiling.jpg"))
    cv2.imwrite(str(happy / "obama_copy.png"), rgb)
    sad = tmp_path / "photos" / "sad"
    sad.mkdir()
    cv2.imwrite(str(sad / "wall.png"), np.full((300, 400, 3), 120, np.uint8))  # no face at all
    out = tmp_path / "m.json"
    assert evaluate.main(["--data", str(tmp_path / "photos"), "--e2e", "--model", str(BUNDLED_DIR),
                          "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["e2e"] and metrics["no_prediction"] == 1
    assert metrics["per_class"]["happy"]["recall"] == 1.0  # both copies of the smile
    assert metrics["accuracy"] == 2 / 3 and metrics["balanced_accuracy"] == 0.5  # the faceless photo is wrong


def test_preprocessing_overrides_are_checked_and_recorded(tmp_path, capsys):
    data = make_face_folders(tmp_path / "val", per_class=1, labels=("angry", "happy"))
    out = tmp_path / "m.json"
    args = ["--data", str(data), "--model", str(BUNDLED_DIR), "--normalization", "clahe", "--scale", "1.1"]
    assert evaluate.main([*args, "--json", str(out)]) == 0
    shift = json.loads((BUNDLED_DIR / "config.json").read_text())["framing"]["shift_up"]  # the model's own
    assert json.loads(out.read_text())["preprocessing"] == {"normalization": "clahe",
                                                            "framing": {"scale": 1.1, "shift_up": shift}}
    assert evaluate.main([*args[:-1], "nan"]) == 2
    assert "scale" in capsys.readouterr().err
