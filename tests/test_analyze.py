"""`python -m emotion.analyze`: the batch command line, run as a user would, on a folder of photos and a video."""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import cv2
import pytest
from PIL import Image
from videos import PEOPLE, two_people_video

from emotion.video import CSV_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("EMOTION_MODEL_REPO", None)
    return subprocess.run(
        [sys.executable, "-m", "emotion.analyze", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """A folder of two photos (one of them 4x enlarged), a broken photo and an empty file, plus a video; analysed."""
    folder = tmp_path_factory.mktemp("photos")
    shutil.copy(EXAMPLES / "grace_hopper.jpg", folder)
    with Image.open(EXAMPLES / "group_three_women.jpg") as photo:
        photo.resize((photo.width * 4, photo.height * 4)).save(folder / "group_large.jpg", quality=90)
    (folder / "broken.jpg").write_bytes((EXAMPLES / "astronaut.jpg").read_bytes()[:300])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not a photo, and not taken from a folder")
    video = two_people_video(tmp_path_factory.mktemp("video") / "two_people.mp4")
    out = tmp_path_factory.mktemp("out")
    result = run_cli(str(folder), str(video), "--out", str(out), "--annotate")
    with open(out / "emotions.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    return result, out, rows, folder, video


def test_it_writes_one_csv_for_photos_and_videos(batch):
    result, out, rows, folder, video = batch
    assert result.returncode == 0, result.stderr
    with open(out / "emotions.csv", newline="") as file:
        assert next(csv.reader(file)) == ["file", *CSV_COLUMNS]
    by_file = {}
    for row in rows:
        by_file.setdefault(Path(row["file"]).name, []).append(row)
    assert set(by_file) == {"grace_hopper.jpg", "group_large.jpg", "two_people.mp4"}
    # Photos: no time; one row per face, numbered largest first.
    assert [row["time_s"] for row in by_file["grace_hopper.jpg"]] == [""]
    assert [row["face_id"] for row in by_file["group_large.jpg"]] == ["1", "2", "3"]
    # The video: times, and the two people as two ids.
    assert {row["face_id"] for row in by_file["two_people.mp4"]} == {"1", "2"}
    assert max(float(row["time_s"]) for row in by_file["two_people.mp4"]) <= PEOPLE[1][2]
    assert f"3 file(s) analysed, 2 skipped: {out / 'emotions.csv'}" in result.stdout


def test_boxes_are_in_each_files_own_pixels(batch):
    _, _, rows, _, _ = batch
    large = [row for row in rows if row["file"].endswith("group_large.jpg")]
    # The 4096x2132 photo is analysed at 2048 px (emotion.images.MAX_SIDE); its boxes are mapped back: the faces of
    # the 1024 px original are at about x 310-900 there, so at 4 times that here.
    centres = sorted(int(row["x"]) + int(row["w"]) / 2 for row in large)
    assert 4 * 300 < centres[0] and centres[-1] < 4 * 920
    assert all(int(row["w"]) > 4 * 90 for row in large)


def test_unreadable_files_are_skipped_with_a_warning(batch):
    result, _, _, folder, _ = batch
    assert f"warning: skipped {folder / 'broken.jpg'}: This file is not an image we can read" in result.stderr
    assert f"warning: skipped {folder / 'empty.png'}: The file is empty." in result.stderr
    assert "notes.txt" not in result.stderr  # a folder's other files are not analysed


def test_it_shows_a_progress_bar(batch):
    result, *_ = batch
    assert "files: 100%" in result.stderr and "5/5" in result.stderr  # broken.jpg, empty.png, 2 photos, the video
    assert "/90 [" in result.stderr and "frame/s" in result.stderr  # the video's own bar, over its 90 frames


def test_annotate_writes_a_copy_of_each_file(batch):
    _, out, _, _, _ = batch
    names = sorted(path.name for path in out.iterdir())
    assert names == ["emotions.csv", "grace_hopper_annotated.jpg", "group_large_annotated.jpg", "two_people_annotated.mp4"]
    assert cv2.imread(str(out / "group_large_annotated.jpg")).shape[1] == 2048
    with av.open(str(out / "two_people_annotated.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "h264"


def test_nothing_readable_is_an_error(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    result = run_cli(str(broken), str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "warning: skipped" in result.stderr and "0 file(s) analysed, 2 skipped" in result.stdout


def test_a_tiny_photo_is_told_it_is_too_small(tmp_path):
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (40, 33), (128, 128, 128)).save(tiny)
    result = run_cli(str(tiny), "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "This image is only 40x33 pixels: too small to find a face in." in result.stderr
