"""The Video tab and the page's rough edges in a real browser: headless Debian Chromium driven by Playwright, against
`python app.py` on loopback (fixture `app_url`). Screenshots go to test-artifacts/: look at them.
"""

import csv
import io
import re
import shutil
import time

import numpy as np
import pytest
from conftest import ARTIFACTS, face_video
from PIL import Image
from videos import two_people_video

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"  # Debian's; never a browser downloaded by `playwright install`
TIMEOUT_MS = 90_000  # generous: 2 busy cores
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Chromium whose fake webcam plays a real face (examples/grace_hopper.jpg, slowly zooming)."""
    webcam_video = face_video(tmp_path_factory.mktemp("webcam") / "face.y4m", 60, 15, "-pix_fmt", "yuv420p")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
                  "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                  f"--use-file-for-fake-video-capture={webcam_video}"],
        )
        yield browser
        browser.close()


def download_csv(page, link) -> list[dict[str, str]]:
    """The rows of the CSV file a link on the page points to, fetched as the browser would."""
    return list(csv.DictReader(io.StringIO(page.request.get(link.get_attribute("href")).text())))


def check_live_timeline(rows: list[dict[str, str]]) -> None:
    """One face (the clip's), followed frame after frame with rising times, with the video CSV's columns."""
    assert len(rows) >= 5
    assert list(rows[0])[:9] == ["time_s", "frame", "face_id", "x", "y", "w", "h", "label", "confidence"]
    assert {row["face_id"] for row in rows} == {"1"}
    times = [float(row["time_s"]) for row in rows]
    assert times == sorted(times) and times[-1] > times[0]


def open_page(browser, app_url, viewport=None, **options):
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900}, **options)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    page.get_by_role("heading", name="Facial emotion recognition").wait_for()
    return context, page


@pytest.fixture
def page(browser, app_url):
    context, page = open_page(browser, app_url)
    yield page
    context.close()


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_video_tab_analyses_an_upload_with_progress(page, tmp_path):
    # H.264, as phones record: the upload's own preview plays too. 12 s: long enough to see the progress.
    video = two_people_video(tmp_path / "two_people.mp4", seconds=12, codec="libx264")
    page.get_by_role("tab", name="Video").click()
    sync_api.expect(page.get_by_text("Videos up to 5 minutes")).to_be_visible()  # the limits, before any work
    page.locator("#video-input input[type=file]").set_input_files(str(video))
    page.locator("#video-input video").wait_for()  # the upload is shown
    page.locator("#video-button").click()

    # Progress over frames, in the outputs' place while the work runs.
    sync_api.expect(page.get_by_text(re.compile(r"Analysing frames.*\d+/180"))).to_be_visible(timeout=TIMEOUT_MS)
    progress_seen = page.get_by_text(re.compile(r"Analysing frames.*\d+/180")).first.inner_text()

    player = page.locator("#video-output video")
    player.wait_for(timeout=TIMEOUT_MS)
    # The browser can play it: it reads its length and frame size (H.264 in MP4 decoded by Chromium itself).
    page.wait_for_function(
        "() => { const v = document.querySelector('#video-output video'); return v && v.readyState >= 1; }",
        timeout=TIMEOUT_MS,
    )
    duration, width, height = page.evaluate(
        "() => { const v = document.querySelector('#video-output video'); return [v.duration, v.videoWidth, v.videoHeight]; }"
    )
    assert duration == pytest.approx(12.0, abs=0.1) and (width, height) == (640, 480)
    sync_api.expect(page.locator("#video-plot img")).to_be_visible()
    sync_api.expect(page.locator("#video-summary [role=grid]")).to_have_attribute("aria-rowcount", "3")  # header + 2
    sync_api.expect(page.locator("#video-status")).to_contain_text("2 faces followed")
    link = page.locator("#video-csv a[href$='two_people_emotions.csv']")
    sync_api.expect(link).to_be_visible()
    csv_text = page.request.get(link.get_attribute("href")).text()
    assert csv_text.startswith("time_s,frame,face_id,x,y,w,h,label,confidence,angry,")
    page.evaluate("() => { const v = document.querySelector('#video-output video'); v.currentTime = 2.6; }")
    time.sleep(1)
    screenshot(page, "tab_video.png")
    sync_api.expect(page.get_by_text("Video not playable")).to_have_count(0)  # neither the upload nor the result
    assert re.search(r"\d+/180", progress_seen)


def test_video_tab_keeps_the_reason_for_a_bad_file_on_screen(page, tmp_path):
    bad = tmp_path / "holiday.mp4"
    bad.write_text("these are not the frames you are looking for\n" * 50)
    page.get_by_role("tab", name="Video").click()
    page.locator("#video-input input[type=file]").set_input_files(str(bad))
    page.locator("#video-button").click()
    status = page.locator("#video-status")
    sync_api.expect(status).to_contain_text("not a video we can read", timeout=TIMEOUT_MS)
    time.sleep(12)  # longer than a toast stays
    sync_api.expect(status).to_contain_text("No result. This file is not a video we can read")


def test_ip_camera_status_keeps_the_reason(page):
    page.get_by_role("tab", name="IP camera").click()
    page.get_by_label("Camera URL").fill("http://127.0.0.1:9/cam.mjpg")  # the discard port: nothing listens
    page.get_by_role("button", name="Start").click()
    status = page.locator("#camera-status textarea")
    sync_api.expect(status).to_have_value(re.compile("The camera refused the connection"), timeout=TIMEOUT_MS)
    time.sleep(12)
    sync_api.expect(status).to_have_value(re.compile("The camera refused the connection"))


def test_image_tab_says_a_tiny_image_is_too_small_and_keeps_saying_it(page, tmp_path):
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.full((33, 40, 3), 128, np.uint8)).save(tiny)
    page.locator("#image-input input[type=file]").set_input_files(str(tiny))
    summary = page.locator("#image-summary")
    sync_api.expect(summary).to_contain_text("only 40x33 pixels: too small", timeout=TIMEOUT_MS)
    time.sleep(12)
    sync_api.expect(summary).to_contain_text("No result. This image is only 40x33 pixels: too small")
    assert "lower the minimum face size" not in summary.inner_text()


def test_phone_width_shows_the_result_where_the_user_looks(browser, app_url):
    context, page = open_page(browser, app_url, PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    try:
        example = page.locator("#image-examples .gallery-item").nth(4)  # group_three_women.jpg
        example.scroll_into_view_if_needed()
        example.click()
        sync_api.expect(page.locator("#image-summary")).to_contain_text("3 faces found", timeout=TIMEOUT_MS)
        result = page.locator("#image-output img")
        result.wait_for()
        sync_api.expect(result).to_be_in_viewport(ratio=0.9)  # scrolled into view, not a screen below
        # Every header of the face table shows its whole text, on one line.
        headers = page.locator("#image-faces thead th")
        sync_api.expect(headers).to_have_count(4)
        for header in headers.all():
            text = header.inner_text().strip()
            assert text in ("#", "emotion", "confidence", "box (x, y, w, h)")
            if text != "box (x, y, w, h)":
                assert header.evaluate("th => th.getBoundingClientRect().height") < 60, text  # not wrapped mid-word
        page.screenshot(path=str(ARTIFACTS / "phone_image_example.png"))
        screenshot(page, "phone_image_full.png")
    finally:
        context.close()


def test_ip_camera_offers_the_timeline_when_the_stream_ends(page, face_clip, mjpeg_clip_server):
    page.get_by_role("tab", name="IP camera").click()
    page.get_by_label("Camera URL").fill(mjpeg_clip_server(face_clip, loop=False))  # 4 s of a face, then it ends
    page.get_by_role("button", name="Start").click()
    status = page.locator("#camera-status textarea")
    sync_api.expect(status).to_have_value(
        re.compile(r"^The camera stream ended\. \d+ frames shown\.$"), timeout=TIMEOUT_MS
    )
    link = page.locator("#camera-csv a[href$='camera_emotions.csv']")
    sync_api.expect(link).to_be_visible(timeout=TIMEOUT_MS)
    check_live_timeline(download_csv(page, link))


def test_webcam_timeline_can_be_downloaded_after_recording(page):
    page.get_by_role("tab", name="Webcam").click()
    webcam = page.locator("#webcam-input")
    webcam.get_by_text("Click to Access Webcam").click()
    webcam.locator("button", has_text="Record").click()
    page.locator("#webcam-output img").wait_for()
    time.sleep(3)
    webcam.locator("button", has_text="Stop").click()
    page.locator("#webcam-csv-button").click()
    link = page.locator("#webcam-csv a[href$='webcam_emotions.csv']")
    sync_api.expect(link).to_be_visible(timeout=TIMEOUT_MS)
    check_live_timeline(download_csv(page, link))
    screenshot(page, "tab_webcam_timeline.png")
