import cv2
import numpy as np
import pytest

from emotion.detect import FaceDetector, clip_box, pass_sides
from emotion.preprocess import FRAME_SCALE, crop_face, face_square
from emotion.bench import EXAMPLES
from photos import grace_hopper_rgb


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


def test_finds_the_face_in_a_real_portrait(detector):
    boxes = detector.detect(grace_hopper_rgb())
    assert len(boxes) == 1
    x, y, w, h = boxes[0]
    assert 130 < x + w / 2 < 400 and 100 < y + h / 2 < 330 and 150 < w < 300


def test_boxes_map_back_to_full_size_pixels(detector):
    photo = grace_hopper_rgb()
    big = cv2.resize(photo, None, fx=3, fy=3)
    (x, y, w, h), = detector.detect(photo)
    (bx, by, bw, bh), = detector.detect(big, min_face_size=300)  # searched at a fraction of the size, mapped back
    assert abs(bw / w - 3) < 0.4 and abs((bx + bw / 2) / (x + w / 2) - 3) < 0.3


def test_min_face_size_filters_small_faces(detector):
    assert detector.detect(grace_hopper_rgb(), min_face_size=400) == []
    assert detector.detect(grace_hopper_rgb(), min_face_size=10**9) == []  # larger than the image
    with pytest.raises(ValueError, match="at least"):
        FaceDetector(min_face_size=10)


def test_a_small_face_is_found_in_a_large_frame(detector):
    # Grace Hopper's face shrunk to about 60 px in a 1280x720 frame: only the finer pyramid passes can see it.
    photo = grace_hopper_rgb()
    (x, y, w, h), = detector.detect(photo)
    small = cv2.resize(photo, None, fx=60 / w, fy=60 / w, interpolation=cv2.INTER_AREA)
    frame = np.full((720, 1280, 3), 90, np.uint8)
    frame[400 : 400 + small.shape[0], 900 : 900 + small.shape[1]] = small
    (bx, by, bw, bh), = detector.detect(frame)
    assert 50 < bw < 75 and abs(bx - (900 + x * 60 / w)) < 15 and abs(by - (400 + y * 60 / w)) < 15


def test_the_pyramid_has_as_many_passes_as_the_minimum_face_needs():
    assert pass_sides(640, 48) == [128, 256]  # a 48 px face is 19 px at 256
    assert pass_sides(640, 200) == [128]
    assert pass_sides(1280, 48) == [128, 256, 512]
    assert pass_sides(48, 24) == [128]
    assert pass_sides(3840, 24)[-1] == 1024  # capped: a 4K pass would take seconds and gigabytes


def test_textures_are_not_taken_for_faces_even_at_the_smallest_face_size(detector):
    # Flag stars, a microphone, a mission badge: BlazeFace's finer passes score them 0.5-0.7 before the second look.
    for name, faces in (("obama_speech.jpg", 1), ("composite_four_faces.jpg", 4), ("biden_arms_crossed.jpg", 1)):
        photo = cv2.cvtColor(cv2.imread(str(EXAMPLES / name)), cv2.COLOR_BGR2RGB)
        assert len(detector.detect(photo, min_face_size=24)) == faces, name
        assert len(detector.detect(photo)) == faces, name


def test_one_face_gives_one_box_at_every_minimum_size(detector):
    for min_face in (24, 48, 96):
        assert len(detector.detect(grace_hopper_rgb(), min_face)) == 1  # no smaller box nested in the face


def test_odd_images_give_no_face_and_no_error(detector):
    for shape in ((1, 1, 3), (2, 2, 3), (10, 3000, 3), (3000, 1, 3), (64, 64, 3), (0, 5, 3)):
        image = np.zeros(shape, np.uint8)
        if 0 not in shape:
            assert detector.detect(image, min_face_size=24) == []
        assert not detector.looks_like_face_crop(image)
    with pytest.raises(ValueError, match="between 0 and 1"):
        FaceDetector(score_threshold=1.0)


def test_a_face_cut_by_the_border_gets_its_whole_box_and_a_padded_crop(detector):
    photo = grace_hopper_rgb()
    (x, y, w, h), = detector.detect(photo)
    cut = photo[y + h // 3 :]  # the top third of the face box is gone
    (bx, by, bw, bh), = detector.detect(cut)
    assert by < 0 and bw > 0.7 * w  # the box reaches past the border (BlazeFace guesses the cut part)
    assert clip_box((bx, by, bw, bh), cut.shape[1], cut.shape[0]) == (bx, 0, bw, by + bh)
    crop = crop_face(cut, (bx, by, bw, bh))
    side = face_square((bx, by, bw, bh))[2]
    assert crop.shape[:2] == (side, side) and side == round(max(bw, bh) * FRAME_SCALE)  # square, not reframed


def test_clip_box_keeps_a_pixel_of_a_box_wholly_outside():
    assert clip_box((-20, 450, 60, 60), 640, 480) == (0, 450, 40, 30)
    assert clip_box((700, 500, 10, 10), 640, 480) == (639, 479, 1, 1)


def test_no_face_in_a_plain_gradient(detector):
    gradient = np.tile(np.linspace(0, 255, 640, dtype=np.uint8), (480, 1))
    assert detector.detect(np.dstack([gradient] * 3)) == []
    assert not detector.looks_like_face_crop(np.dstack([gradient[:200, :200]] * 3))


def test_a_framed_face_crop_is_recognised_as_such(detector):
    photo = grace_hopper_rgb()
    box, = detector.detect(photo)
    crop = cv2.resize(crop_face(photo, box), (48, 48), interpolation=cv2.INTER_AREA)
    assert detector.looks_like_face_crop(crop)


@pytest.mark.parametrize("size", [(128, 96), (256, 192), (128, 128), (512, 288)])
def test_the_onnx_detector_computes_what_the_original_tflite_file_does(detector, size):
    # The reference: MediaPipe's own .tflite file, run by OpenCV's DNN module (models/face_detector.md).
    from emotion.detect import MODEL_FILE

    width, height = size
    image = cv2.resize(grace_hopper_rgb(), size, interpolation=cv2.INTER_AREA)
    blob = cv2.dnn.blobFromImage(image, 1 / 127.5, size, (127.5, 127.5, 127.5))
    net = cv2.dnn.readNetFromTFLite(str(MODEL_FILE.with_suffix(".tflite")))
    net.setInput(blob)
    expected = sorted(net.forward(net.getUnconnectedOutLayersNames()), key=lambda out: out.shape[-1], reverse=True)
    regressors, logits = detector._infer(image[None])
    np.testing.assert_allclose(regressors.reshape(-1, 16), expected[0].reshape(-1, 16), atol=1e-3)
    np.testing.assert_allclose(logits.reshape(-1), expected[1].reshape(-1), atol=1e-3)
    assert logits.max() > 0  # a face is in there: the comparison covers real detections, not only background


def test_doubtful_faces_are_confirmed_in_one_batch_as_one_by_one(detector):
    photo = grace_hopper_rgb()
    (face,) = detector.detect(photo)
    boxes = np.array([face, (5, 5, 60, 60), (face[0] + 4, face[1] - 3, face[2], face[3])], np.float32)
    together = detector._confirm(photo, boxes)
    assert together.tolist() == [detector._confirm(photo, box[None])[0] for box in boxes]
    assert together.tolist() == [True, False, True]
    assert detector._confirm(photo, np.zeros((0, 4), np.float32)).shape == (0,)


def test_threads_share_the_detector_and_get_the_same_boxes(detector):
    from concurrent.futures import ThreadPoolExecutor

    images = [cv2.imread(str(EXAMPLES / name))[:, :, ::-1].copy()
              for name in ("grace_hopper.jpg", "group_three_women.jpg", "composite_four_faces.jpg")]
    expected = [detector.detect(image) for image in images]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(detector.detect, images * 4))
    assert got == expected * 4


def test_a_large_pass_gives_its_memory_back():
    # ONNX Runtime's arena would keep the buffers of a 1024x768 pass (about 90 MB) for the life of the app.
    import subprocess
    import sys

    script = """
import numpy as np
from emotion.detect import FaceDetector
def rss():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS")) / 1024
detector = FaceDetector()
frame = np.zeros((480, 640, 3), np.uint8)
detector.detect(frame)
before = rss()
detector.detect(np.full((3000, 4000, 3), 90, np.uint8), 24)  # passes up to 1024x768
detector.detect(frame)
print(rss() - before)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert float(done.stdout.split()[-1]) < 60
