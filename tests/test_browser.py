"""The app in a real browser: headless Debian Chromium driven by Playwright, against `python app.py` on loopback.

Chromium's fake camera plays a video of a real face (made with ffmpeg from examples/) into the webcam tab. Each tab
is screenshotted into test-artifacts/ (look at them: they are what a user sees), and the webcam frame rate the page
receives is written to test-artifacts/webcam_fps.json. Chromium and the app share the machine's cores, so the
measured rate is a lower bound.
"""

import json
import re
import shutil
import time

import pytest
from conftest import ARTIFACTS, face_video

from emotion import LABELS

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"  # Debian's; never a browser downloaded by `playwright install`
FPS_SECONDS = 10  # how long the webcam frame rate is measured
# Issue 17 aims at 24 annotated frames/s (the stream's ceiling is 25; README, Performance). The browser shares the 2
# cores with the app here, and other work may run beside them (5.8 frames/s at a load average of 20): a third of the
# target is what this test insists on.
MIN_WEBCAM_FPS = 8
TIMEOUT_MS = 60_000  # generous: 2 busy cores

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed")

# Counts the frames the page shows: each new annotated frame is a new <img> or a new src on it. In the page, so
# that no polling from Python steals CPU from the app.
COUNT_FRAMES = """(selector) => {
    window.framesShown = 0;
    new MutationObserver((mutations) => {
        for (const m of mutations) {
            if (m.type === "attributes" && m.target.tagName === "IMG") window.framesShown++;
            for (const node of m.addedNodes) {
                if (node.tagName === "IMG" || (node.querySelector && node.querySelector("img"))) window.framesShown++;
            }
        }
    }).observe(document.querySelector(selector),
               {subtree: true, childList: true, attributes: true, attributeFilter: ["src"]});
}"""

# The size of the shown frame: the <img> whose new src has finished loading (a frame may be mid-load when asked).
FRAME_SIZE = """async (selector) => {
    for (let i = 0; i < 100; i++) {
        const img = document.querySelector(selector);
        if (img && img.complete && img.naturalWidth > 0) return [img.naturalWidth, img.naturalHeight];
        await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return [0, 0];
}"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webcam_video = face_video(tmp_path_factory.mktemp("webcam") / "face.y4m", 60, 15, "-pix_fmt", "yuv420p")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--no-first-run", "--disable-sync",
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-video-capture={webcam_video}",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url)
    page.get_by_role("heading", name="Facial emotion recognition").wait_for()
    yield page
    context.close()


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_image_tab_example_shows_its_label(page):
    # Clicking an example loads its cached result: the annotated photo, the label and one table row per face.
    page.locator("#image-examples .gallery-item").nth(4).click()  # group_three_women.jpg (examples sort by name)
    summary = page.locator("#image-summary")
    sync_api.expect(summary).to_contain_text("3 faces found", timeout=TIMEOUT_MS)
    sync_api.expect(page.locator("#image-label h2")).to_have_text(re.compile(f"^({'|'.join(LABELS)})$"))
    sync_api.expect(page.locator("#image-faces [role=grid]")).to_have_attribute("aria-rowcount", "4")  # header + 3
    sync_api.expect(page.locator("#image-output img")).to_be_visible()
    screenshot(page, "tab_image.png")


def test_webcam_tab_streams_annotated_frames(page):
    page.get_by_role("tab", name="Webcam").click()
    webcam = page.locator("#webcam-input")
    webcam.get_by_text("Click to Access Webcam").click()
    page.evaluate(COUNT_FRAMES, "#webcam-output")
    webcam.locator("button", has_text="Record").click()

    page.locator("#webcam-output img").wait_for()  # the first annotated frame
    first = page.evaluate("window.framesShown")
    time.sleep(FPS_SECONDS)
    frames = page.evaluate("window.framesShown") - first
    fps = frames / FPS_SECONDS
    rate_text = page.locator("#webcam-fps textarea").input_value()
    size = page.evaluate(FRAME_SIZE, "#webcam-output img")
    screenshot(page, "tab_webcam.png")
    webcam.locator("button", has_text="Stop").click()

    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "webcam_fps.json").write_text(
        json.dumps({"seconds": FPS_SECONDS, "frames_shown": frames, "fps_in_browser": round(fps, 2),
                    "server_says": rate_text, "frame_size": "x".join(map(str, size))}, indent=2)
    )
    assert size == [640, 480]  # the frames come back at the size the app asks the camera for
    assert fps >= MIN_WEBCAM_FPS, f"only {frames} annotated frames in {FPS_SECONDS} s"
    assert "frames/s" in rate_text  # the processing rate is shown


def test_ip_camera_tab_streams_and_stops(page, face_clip, mjpeg_clip_server):
    page.get_by_role("tab", name="IP camera").click()
    status = page.locator("#camera-status textarea")

    page.get_by_label("Camera URL").fill("http://127.0.0.1:9/cam.mjpg")  # the discard port: nothing listens
    page.get_by_role("button", name="Start").click()
    sync_api.expect(page.get_by_text("The camera refused the connection")).to_be_visible()

    page.get_by_label("Camera URL").fill(mjpeg_clip_server(face_clip, loop=True))
    page.get_by_role("button", name="Start").click()
    sync_api.expect(status).to_have_value(re.compile(r"^Streaming: \d+ frames?"), timeout=TIMEOUT_MS)
    sync_api.expect(page.locator("#camera-output img")).to_be_visible()
    time.sleep(2)
    screenshot(page, "tab_ip_camera.png")
    page.get_by_role("button", name="Stop").click()
    sync_api.expect(status).to_have_value(re.compile(r"^Stopped\. \d+ frames? shown\.$"), timeout=TIMEOUT_MS)
