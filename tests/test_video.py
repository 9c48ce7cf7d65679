"""Video files: emotion.video on real videos made from the example photos, then /analyze_video through gradio_client
against the launched app (fixture `app_url`)."""

import csv
import re
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from videos import FPS, PEOPLE, SECONDS, two_people_video

from emotion import LABELS, EmotionRecognizer
from emotion import video as video_module
from emotion.plots import plot_timeline
from emotion.video import CSV_COLUMNS, Timeline, VideoError, analyze_video

SPAN_SLACK = 0.25  # seconds: a face is first and last seen within this of when it entered and left (10 frames/s)


@pytest.fixture(scope="module")
def recognizer():
    return EmotionRecognizer.load(repo_id="bundled")


@pytest.fixture(scope="module")
def two_people(tmp_path_factory) -> Path:
    return two_people_video(tmp_path_factory.mktemp("video") / "two_people.mp4")


@pytest.fixture(scope="module")
def analysed(recognizer, two_people, tmp_path_factory):
    calls = []
    out = tmp_path_factory.mktemp("out") / "annotated"
    result = analyze_video(recognizer, two_people, out, progress=lambda done, total: calls.append((done, total)))
    return result, calls


def check_spans(summary: list[dict]) -> None:
    """Two faces, in the order they entered, each seen from when they entered to when they left."""
    assert [face["face_id"] for face in summary] == [1, 2]
    for face, (_, first, last, _) in zip(summary, PEOPLE):
        assert first <= face["first_s"] <= first + SPAN_SLACK, face
        assert last - SPAN_SLACK <= face["last_s"] <= last, face


def check_playable(path: str | Path, frames: int, fps: int, seconds: float) -> None:
    """An H.264 MP4 that browsers play (yuv420p, the index before the data) with the source's frames and timing."""
    data = Path(path).read_bytes()
    assert data[4:8] == b"ftyp" and data.find(b"moov") < data.find(b"mdat"), "moov not before mdat: no fast start"
    with av.open(str(path)) as container:
        assert "mp4" in container.format.name
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == Fraction(fps)
        decoded = list(container.decode(stream))
    assert len(decoded) == frames
    assert decoded[-1].time == pytest.approx(seconds - 1 / fps, abs=1e-3)


def test_two_people_keep_two_ids_over_the_time_they_are_in_view(analysed):
    result, _ = analysed
    check_spans(result.timeline.summary())
    rows = result.timeline.rows
    # Every analysed frame while a person is in view has a row for them: no frames lost to new ids or misses.
    for face_id, (_, first, last, _) in enumerate(PEOPLE, start=1):
        times = [row[0] for row in rows if row[2] == face_id]
        assert len(times) >= (last - first) * 10 - 2
    # Grace Hopper stands on the left, Barack Obama on the right.
    assert all(row[3] + row[5] / 2 < 320 for row in rows if row[2] == 1)
    assert all(row[3] + row[5] / 2 > 320 for row in rows if row[2] == 2)


def test_default_rate_analyses_10_frames_per_second_and_reports_progress(analysed):
    result, calls = analysed
    total = round(SECONDS * FPS)
    assert result.frames == total
    assert result.duration_s == pytest.approx(SECONDS)
    assert result.analysed == pytest.approx(SECONDS * 10, abs=1)
    assert calls[0] == (1, total) and calls[-1] == (total, total)
    assert [done for done, _ in calls] == list(range(1, total + 1))


def test_annotated_copy_plays_in_a_browser_at_the_source_rate(analysed, two_people):
    result, _ = analysed
    assert result.video_path.suffix == ".mp4"
    check_playable(result.video_path, round(SECONDS * FPS), FPS, SECONDS)
    # Boxes are drawn: at 2.4 s both people are in view and the copy differs from the source around their faces.
    with av.open(str(result.video_path)) as annotated, av.open(str(two_people)) as source:
        drawn = [f.to_ndarray(format="rgb24") for f in annotated.decode(video=0) if abs(f.time - 2.4) < 0.01][0]
        plain = [f.to_ndarray(format="rgb24") for f in source.decode(video=0) if abs(f.time - 2.4) < 0.01][0]
    changed = np.abs(drawn.astype(int) - plain.astype(int)).max(axis=2) > 60
    assert changed[:, :320].mean() > 0.003 and changed[:, 320:].mean() > 0.003


def test_csv_has_the_documented_columns_and_one_row_per_face_per_analysed_frame(analysed, tmp_path):
    result, _ = analysed
    path = tmp_path / "faces.csv"
    result.timeline.write_csv(path)
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    assert tuple(rows[0]) == CSV_COLUMNS == (
        "time_s", "frame", "face_id", "x", "y", "w", "h", "label", "confidence", *LABELS
    )
    assert len(rows) - 1 == len(result.timeline.rows)
    for row in rows[1:]:
        record = dict(zip(rows[0], row))
        probabilities = [float(record[label]) for label in LABELS]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-3)
        assert record["label"] == LABELS[int(np.argmax(probabilities))]
        assert float(record["confidence"]) == pytest.approx(max(probabilities), abs=1e-4)
        assert int(record["frame"]) / FPS == pytest.approx(float(record["time_s"]), abs=1e-3)
    frames_with_both = {row[1] for row in rows[1:] if row[2] == "1"} & {row[1] for row in rows[1:] if row[2] == "2"}
    assert len(frames_with_both) >= 10  # 1.5 s together, at 10 analysed frames per second


def test_summary_shares_add_up(analysed):
    result, _ = analysed
    for face in result.timeline.summary():
        assert face["frames"] == sum(1 for row in result.timeline.rows if row[2] == face["face_id"])
        assert sum(face[label] for label in LABELS) == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("rate, analysed_frames", [(5, 30), (30, 90), (0.5, 3)])
def test_rate_sets_how_many_frames_are_analysed(recognizer, two_people, rate, analysed_frames):
    result = analyze_video(recognizer, two_people, rate=rate)
    assert result.analysed == analysed_frames
    assert result.video_path is None
    if rate >= 5:
        check_spans(result.timeline.summary())


def test_a_large_video_gives_boxes_in_its_own_pixels(recognizer, tmp_path):
    small = analyze_video(recognizer, two_people_video(tmp_path / "small.mp4", seconds=3))
    large = analyze_video(recognizer, two_people_video(tmp_path / "large.mp4", seconds=3, scale=3), min_face_size=144)
    assert video_module.WORK_SIDE < 1920  # so the large one was analysed shrunk, and its boxes mapped back
    assert large.timeline.face_ids() == small.timeline.face_ids() == [1, 2]
    for face_id in (1, 2):
        a = np.array([row[3:7] for row in small.timeline.rows if row[2] == face_id], float).mean(axis=0)
        b = np.array([row[3:7] for row in large.timeline.rows if row[2] == face_id], float).mean(axis=0)
        assert b / 3 == pytest.approx(a, abs=6)


def test_a_phone_video_stored_sideways_is_analysed_upright(recognizer, tmp_path):
    sideways = two_people_video(tmp_path / "sideways.mp4", seconds=3, sideways=True)
    tagged = tmp_path / "phone.mp4"  # the display rotation tag a phone writes: players turn the frames upright
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(sideways), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(tagged)],
        check=True, timeout=60,
    )
    result = analyze_video(recognizer, tagged)
    assert result.timeline.face_ids() == [1, 2]
    # Boxes in the upright picture (640x480): Grace Hopper on the left, Barack Obama on the right.
    assert all(row[3] + row[5] / 2 < 320 for row in result.timeline.rows if row[2] == 1)
    assert all(row[3] + row[5] / 2 > 320 and row[4] + row[6] <= 480 for row in result.timeline.rows if row[2] == 2)


def test_a_video_without_faces_has_an_empty_timeline(recognizer, tmp_path):
    result = analyze_video(recognizer, two_people_video(tmp_path / "empty_room.mp4", seconds=2, people=False))
    assert result.frames == 30 and list(result.timeline.rows) == []


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.mp4", b"", video_module.EMPTY),
        ("notes.mp4", b"these are my notes, not a video\n" * 20, video_module.NOT_A_VIDEO),
        ("random.webm", np.random.default_rng(0).bytes(50_000), video_module.NOT_A_VIDEO),
    ],
)
def test_bad_files_get_a_message(recognizer, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(VideoError) as raised:
        analyze_video(recognizer, path)
    assert str(raised.value) == message


def test_a_photo_is_not_a_video(recognizer):
    with pytest.raises(VideoError, match="not a video"):
        analyze_video(recognizer, Path(__file__).parent.parent / "examples" / "astronaut.jpg")


def test_a_playlist_cannot_make_ffmpeg_read_other_files(recognizer, tmp_path, two_people):
    # FFmpeg would follow an HLS playlist to the files (or URLs) it names; only container formats may open.
    playlist = tmp_path / "list.mp4"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:6,\nfile://{two_people}\n#EXT-X-ENDLIST\n")
    with pytest.raises(VideoError, match="not a video"):
        analyze_video(recognizer, playlist)


def test_a_video_cut_short_is_analysed_up_to_the_damage(recognizer, tmp_path):
    whole = two_people_video(tmp_path / "whole.mkv", codec="mjpeg")
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    result = analyze_video(recognizer, cut)
    assert 0 < result.frames < round(SECONDS * FPS)
    assert result.timeline.face_ids() == [1, 2]


def test_too_long_a_video_is_refused_before_any_frame_is_analysed(recognizer, two_people, monkeypatch):
    monkeypatch.setattr(video_module, "MAX_DURATION_S", 4.0)
    calls = []
    with pytest.raises(VideoError, match="longer than"):
        analyze_video(recognizer, two_people, progress=lambda *args: calls.append(args))
    assert calls == []


def test_too_large_a_file_is_refused_before_it_is_opened(recognizer, two_people, monkeypatch):
    monkeypatch.setattr(video_module, "MAX_BYTES", two_people.stat().st_size - 1)
    with pytest.raises(VideoError, match="larger than"):
        analyze_video(recognizer, two_people)


def test_timeline_plot_is_a_picture_of_each_face(analysed, tmp_path):
    result, _ = analysed
    timeline = result.timeline
    path = tmp_path / "timeline.png"
    plot_timeline({face: timeline.series(face) for face in timeline.face_ids()}, path)
    with Image.open(path) as picture:
        image = np.asarray(picture.convert("RGB"))
    assert image.shape[0] > 400 and image.shape[1] >= 800
    # The happy line of face 2 (Barack Obama, smiling) is drawn in happy's colour somewhere in the lower panel.
    happy = np.all(np.abs(image.astype(int) - [250, 200, 0]) < 40, axis=2)
    assert happy[image.shape[0] // 2 :].sum() > 200


def test_timeline_keeps_the_latest_rows_up_to_its_limit(analysed):
    from emotion.recognizer import face_from_probs
    from emotion.tracking import TrackedFace

    result, _ = analysed
    timeline = Timeline(max_rows=10)
    faces = {row[1]: row for row in result.timeline.rows}  # frame -> one of its rows, replayed as a tracked face
    for frame, row in sorted(faces.items()):
        timeline.add(row[0], frame, [TrackedFace(row[2], face_from_probs(row[3:7], np.array(row[9:])))])
    assert len(timeline.rows) == 10 and timeline.dropped == len(faces) - 10
    assert [row[1] for row in timeline.rows] == sorted(faces)[-10:]


def test_timeline_keeps_photo_rows_without_a_time(recognizer, tmp_path):
    from emotion.tracking import TrackedFace

    with Image.open(Path(__file__).parent.parent / "examples" / "astronaut.jpg") as photo:
        face = recognizer.detect(np.asarray(photo.convert("RGB")))[0]
    timeline = Timeline()
    timeline.add(None, 0, [TrackedFace(1, face)], scale=0.5)
    timeline.write_csv(tmp_path / "photo.csv")
    with open(tmp_path / "photo.csv", newline="") as file:
        header, row = list(csv.reader(file))
    assert row[0] == "" and row[2] == "1" and int(row[5]) == pytest.approx(face.box[2] * 2, abs=1)


# --- /analyze_video through gradio_client, against the launched app -----------------------------------------------


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def test_analyze_video_endpoint_returns_video_csv_plot_and_summary(client, two_people):
    video, csv_path, plot, summary = client.predict(handle_file(str(two_people)), api_name="/analyze_video")
    check_playable(video, round(SECONDS * FPS), FPS, SECONDS)
    with open(csv_path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert {row["face_id"] for row in rows} == {"1", "2"}  # stable ids: two, not one per frame
    for face_id, (_, first, last, _) in enumerate(PEOPLE, start=1):
        times = [float(row["time_s"]) for row in rows if row["face_id"] == str(face_id)]
        assert first <= min(times) <= first + SPAN_SLACK and last - SPAN_SLACK <= max(times) <= last
    with Image.open(plot) as image:
        assert image.format == "PNG"
    assert summary["headers"] == ["face_id", "frames", "first_s", "last_s", *LABELS]
    check_spans([dict(zip(summary["headers"], row)) for row in summary["data"]])


def test_analyze_video_is_on_the_api_page(client):
    endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/analyze_video"]
    assert [p["parameter_name"] for p in endpoint["parameters"]] == ["video", "rate", "min_face_size", "threshold"]
    assert [r["component"] for r in endpoint["returns"]] == ["Video", "File", "Image", "Dataframe"]


def test_analyze_video_settings(client, two_people):
    *_, summary = client.predict(handle_file(str(two_people)), 5, 48, 0.0, api_name="/analyze_video")
    assert sum(row[1] for row in summary["data"]) <= 31  # 5 frames/s over 6 s, fewer than at 10
    with pytest.raises(AppError, match="less than minimum value 1"):  # the slider's own range check
        client.predict(handle_file(str(two_people)), 0, api_name="/analyze_video")


def long_video(path: Path, seconds: int) -> Path:
    """A tiny 1-frame-per-second video, `seconds` long (cheap to make, long to watch)."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"color=gray:size=64x48:rate=1:duration={seconds}",
         "-c:v", "mpeg4", str(path)],
        check=True, timeout=60,
    )
    return path


def test_bad_videos_get_clear_messages_and_the_server_keeps_serving(client, tmp_path, two_people):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_text("not a video\n" * 100)
    room = two_people_video(tmp_path / "room.mp4", seconds=1, people=False)
    long = long_video(tmp_path / "long.mp4", int(video_module.MAX_DURATION_S) + 30)
    photo = Path(__file__).parent.parent / "examples" / "astronaut.jpg"
    for path, message in [
        (empty, "The file is empty"), (text, "not a video we can read"), (photo, "not a video we can read"),
        (room, "No face was found in this video"), (long, "longer than 5 minutes"),
    ]:
        with pytest.raises(AppError, match=message):
            client.predict(handle_file(str(path)), api_name="/analyze_video")
    # Still serving: a good video right after.
    *_, summary = client.predict(handle_file(str(two_people)), api_name="/analyze_video")
    assert len(summary["data"]) == 2


# --- The README's API snippets, run as written against the launched app ----------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_api_snippets() -> list[str]:
    text = README.read_text()
    api = text[text.index("## API\n") : text.index("### Batch analysis")]
    return re.findall(r"```python\n(.*?)```", api, re.S)


def test_readme_snippets_run_on_a_face_no_face_and_a_video(app_url, tmp_path, two_people, capsys):
    predict_snippet, video_snippet = readme_api_snippets()
    predict_snippet = predict_snippet.replace('"http://127.0.0.1:7860/"', repr(app_url))
    empty_wall = tmp_path / "wall.jpg"
    Image.fromarray(np.full((300, 400, 3), 90, np.uint8)).save(empty_wall)
    exec(predict_snippet.replace('"face.jpg"', repr(str(empty_wall))), namespace := {})
    assert capsys.readouterr().out.rstrip().endswith("No face found")  # no KeyError on a photo without a face
    astronaut = Path(__file__).parent.parent / "examples" / "astronaut.jpg"
    exec(predict_snippet.replace('"face.jpg"', repr(str(astronaut))), namespace)
    assert re.search(rf"^({'|'.join(LABELS)}) \[\('", capsys.readouterr().out, re.M)
    exec(video_snippet.replace('"meeting.mp4"', repr(str(two_people))), namespace)
    out = capsys.readouterr().out
    assert "{'face_id': 1, " in out and "{'face_id': 2, " in out
    assert re.search(rf"^0\.\d+ 1 ({'|'.join(LABELS)}) [01]\.\d+$", out, re.M)  # time, face, label, confidence
