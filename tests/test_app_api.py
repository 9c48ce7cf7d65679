"""The app's public API, through gradio_client, against `python app.py` served on loopback (fixture `app_server`)."""

import json
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from emotion import LABELS

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def check_probabilities(probabilities: dict[str, float]) -> None:
    assert set(probabilities) == set(LABELS)
    assert all(0.0 <= p <= 1.0 for p in probabilities.values())
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)


def test_api_page_lists_only_predict(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert list(endpoints) == ["/predict"]
    parameters = endpoints["/predict"]["parameters"]
    assert [p["parameter_name"] for p in parameters] == ["image", "min_face_size", "threshold"]
    assert [p["parameter_has_default"] for p in parameters] == [False, True, True]
    assert len(endpoints["/predict"]["returns"]) == 3


def test_predict_on_an_example(client):
    photo = EXAMPLES / "grace_hopper.jpg"
    annotated, label, faces = client.predict(handle_file(str(photo)), api_name="/predict")

    # 1. The annotated image: a real image file of the photo's size (boxes drawn on it).
    image = cv2.imread(annotated)
    assert image is not None, annotated
    original = cv2.imread(str(photo))
    assert image.shape == original.shape
    assert np.abs(image.astype(int) - original.astype(int)).mean() > 0.5  # something was drawn
    # 2. gr.Label: the most prominent face's 7 probabilities, summing to 1.
    confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
    check_probabilities(confidences)
    assert label["label"] == max(confidences, key=confidences.get)
    # 3. The faces: one (she is alone), with box, label, confidence and probabilities.
    assert len(faces) == 1
    face = faces[0]
    x, y, w, h = face["box"]
    assert 100 < x + w / 2 < 450 and 80 < y + h / 2 < 350 and w > 100  # her face, roughly at x 160-380, y 100-330
    assert face["label"] == label["label"] in LABELS
    assert face["confidence"] == pytest.approx(max(face["probabilities"].values()))
    check_probabilities(face["probabilities"])
    assert face["whole_image"] is False


def test_predict_orders_faces_largest_first(client):
    _, label, faces = client.predict(handle_file(str(EXAMPLES / "group_three_women.jpg")), api_name="/predict")
    assert len(faces) == 3
    areas = [face["box"][2] * face["box"][3] for face in faces]
    assert areas == sorted(areas, reverse=True)
    assert label["label"] == faces[0]["label"]
    for face in faces:
        check_probabilities(face["probabilities"])


def test_settings_are_honoured(client):
    photo = handle_file(str(EXAMPLES / "group_three_women.jpg"))
    _, _, all_faces = client.predict(photo, api_name="/predict")
    _, label, none_left = client.predict(photo, 48, 1.0, api_name="/predict")  # no face is 100% sure
    assert none_left == [] and not label.get("confidences")
    smallest = min(face["box"][2] for face in all_faces)
    _, _, big_only = client.predict(photo, smallest + 20, 0.0, api_name="/predict")
    assert len(big_only) < len(all_faces)


def test_no_face_says_so(client, tmp_path):
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 180, np.uint8))
    annotated, label, faces = client.predict(handle_file(str(blank)), api_name="/predict")
    assert faces == [] and not label.get("confidences")
    assert cv2.imread(annotated) is not None  # the (unannotated) image still comes back


def test_face_crop_is_classified_whole(client, tmp_path):
    photo = cv2.imread(str(EXAMPLES / "grace_hopper.jpg"))
    crop = tmp_path / "crop.png"
    cv2.imwrite(str(crop), cv2.resize(photo[107:328, 157:378], (64, 64), interpolation=cv2.INTER_AREA))
    _, label, faces = client.predict(handle_file(str(crop)), api_name="/predict")
    assert len(faces) == 1
    assert faces[0]["whole_image"] is True and faces[0]["box"] == [0, 0, 64, 64]
    assert label["label"] == faces[0]["label"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"name,label\nalice,happy\n", "not an image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "not an image"),  # a JPEG header, then nothing usable
    ],
)
def test_bad_upload_gets_a_clear_error(client, tmp_path, content, message):
    bad = tmp_path / "upload.jpg"
    bad.write_bytes(content)
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(bad)), api_name="/predict")


def test_start_time_and_predict_latency(app_server, client):
    photo = handle_file(str(EXAMPLES / "obama_smiling.jpg"))
    client.predict(photo, api_name="/predict")  # warm-up
    latencies = []
    for _ in range(20):
        started = time.perf_counter()
        _, _, faces = client.predict(photo, api_name="/predict")
        latencies.append(time.perf_counter() - started)
        assert len(faces) == 1
    median = statistics.median(latencies)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "predict_latency.json").write_text(
        json.dumps(
            {"image": "examples/obama_smiling.jpg", "calls": len(latencies), "median_s": round(median, 4),
             "max_s": round(max(latencies), 4), "start_to_http_200_s": round(app_server.start_seconds, 2)},
            indent=2,
        )
    )
    # Generous bounds (shared, busy cores); the measured values are in test-artifacts/ for the README.
    assert median < 2.0
    assert app_server.start_seconds < 60


def test_readme_snippet_works_verbatim(app_url, tmp_path):
    readme = (ROOT / "README.md").read_text()
    snippet = readme.split("## API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert 'Client(url).predict(handle_file("face.jpg"), api_name="/predict")' in snippet
    shutil.copyfile(EXAMPLES / "grace_hopper.jpg", tmp_path / "face.jpg")
    # Only the address changes: the test's app listens on a free port, not on 7860.
    code = snippet.replace('"http://127.0.0.1:7860/"', repr(app_url))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    label, faces = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert label in LABELS and "'box': [" in faces


def test_identical_concurrent_requests_all_get_their_image(app_url):
    # The same photo from several users at once: every annotated image arrives whole (see app.save_image_atomically).
    photo = handle_file(str(EXAMPLES / "obama_speech.jpg"))

    def user(_):
        client = Client(app_url, verbose=False)
        return [cv2.imread(client.predict(photo, api_name="/predict")[0]) is not None for _ in range(5)]

    with ThreadPoolExecutor(4) as pool:
        results = [ok for user_results in pool.map(user, range(4)) for ok in user_results]
    assert results == [True] * 20
