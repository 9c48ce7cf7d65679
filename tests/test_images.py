import io
import json
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps, features

from emotion.images import (
    BAD_SHAPE,
    EMPTY,
    MAX_SIDE,
    NO_IMAGE,
    TOO_LARGE,
    UNREADABLE,
    ImageError,
    downscale_to,
    load_image,
)

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def flat_png(width: int, height: int, bit_depth: int = 1) -> bytes:
    """A valid black grayscale PNG (1 or 16 bits a pixel) of any size, built row by row so huge ones stay cheap."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes((width * bit_depth + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def quadrants(width: int = 60, height: int = 40) -> Image.Image:
    """Red top-left quadrant on blue: any rotation or flip moves the red block."""
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height // 2))
    return image


def assert_rgb(image: np.ndarray) -> None:
    assert isinstance(image, np.ndarray)
    assert image.dtype == np.uint8
    assert image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] >= 1 and image.shape[1] >= 1
    assert max(image.shape[:2]) <= MAX_SIDE
    assert image.flags.c_contiguous


def close_to(pixel: np.ndarray, color: tuple[int, int, int], tolerance: int = 12) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(color)) <= tolerance))


# --- missing, empty and unreadable input ---------------------------------------------------------


def test_none_is_refused():
    with pytest.raises(ImageError, match=NO_IMAGE):
        load_image(None)


def test_empty_bytes_are_refused():
    with pytest.raises(ImageError, match=EMPTY):
        load_image(b"")


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match=EMPTY):
        load_image(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ImageError, match="could not open"):
        load_image(tmp_path / "nope.png")


def test_other_types_are_a_programming_error():
    with pytest.raises(TypeError):
        load_image(42)  # type: ignore[arg-type]


JPEG = encode(quadrants(), "JPEG")
PNG = encode(quadrants(), "PNG")


UNREADABLE_FILES = {
    "truncated.jpg": JPEG[: len(JPEG) // 2],
    "truncated.png": PNG[: len(PNG) // 2],
    "header-only.png": PNG[:40],
    "notes.jpg": b"Dear diary, today I renamed a text file to .jpg\n" * 20,
    "page.png": b"<!doctype html><html><body>hello</body></html>",
    "noise.gif": bytes(range(256)) * 4,
    "corrupt.jpg": JPEG[:2] + bytes(100) + JPEG[102:],
}


@pytest.mark.parametrize("name", UNREADABLE_FILES)
def test_unreadable_files_give_a_friendly_error(tmp_path, name):
    content = UNREADABLE_FILES[name]
    path = tmp_path / name
    path.write_bytes(content)
    for source in (path, str(path), content):
        with pytest.raises(ImageError) as caught:
            load_image(source)
        assert str(caught.value) == UNREADABLE


# --- size limits ----------------------------------------------------------------------------------


def test_one_pixel_image():
    image = load_image(encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"))
    assert image.shape == (1, 1, 3)
    assert tuple(image[0, 0]) == (10, 200, 30)


def test_12000_by_12000_image_is_refused_quickly(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(flat_png(12000, 12000))
    assert path.stat().st_size < 100_000  # a real, complete PNG, it just compresses very well
    started = time.perf_counter()
    with pytest.raises(ImageError, match=TOO_LARGE):
        load_image(path)
    assert time.perf_counter() - started < 1.0


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_just_over_the_pixel_limit_is_refused():
    with pytest.raises(ImageError, match=TOO_LARGE):
        load_image(flat_png(8001, 8000))


# Peak memory of one load_image() in a fresh process: VmHWM (reset through /proc/self/clear_refs) over the RSS
# before it. Pillow allocates pixels with malloc, which tracemalloc does not see.
PEAK_SCRIPT = """
import json, pathlib, sys, time
from emotion.images import load_image
def status(name):
    line = next(l for l in pathlib.Path("/proc/self/status").read_text().splitlines() if l.startswith(name + ":"))
    return int(line.split()[1]) / 1024
load_image(sys.argv[2])  # warm up every library on a small image of the same format
before = status("VmRSS")
pathlib.Path("/proc/self/clear_refs").write_text("5")
started = time.perf_counter()
image = load_image(sys.argv[1])
print(json.dumps({"peak_mb": status("VmHWM") - before, "seconds": time.perf_counter() - started,
                  "shape": image.shape}))
"""


def decode_peak(path: Path, small: Path) -> dict:
    """load_image(path)'s peak memory (MB over the RSS before), time and output shape, in a fresh process."""
    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(path), str(small)], capture_output=True, text=True, timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def float_tiff(path: Path, side: int) -> None:
    Image.new("F", (side, side), 0.5).save(path, compression="tiff_adobe_deflate")


@pytest.mark.parametrize(
    ("name", "write", "decoded_mb"),
    [
        ("float.tif", float_tiff, 8000 * 8000 * 4 / 2**20),  # Pillow decodes mode F at 4 bytes a pixel
        ("gray16.png", lambda path, side: path.write_bytes(flat_png(side, side, 16)), 8000 * 8000 * 2 / 2**20),
    ],
)
def test_small_files_that_decode_to_huge_pictures_cost_bounded_memory(tmp_path, name, write, decoded_mb):
    # An 8000x8000 float TIFF or 16-bit PNG is a few hundred KB on disk. Pillow must decode it whole, but the
    # conversion to 8 bit once ran at full size too (float copies: about 1 GB and 5 s); now it runs after
    # shrinking, so the peak is the decoded picture plus a little.
    big, small = tmp_path / name, tmp_path / f"small-{name}"
    write(big, 8000)
    write(small, 64)
    assert big.stat().st_size < 1_000_000
    measured = decode_peak(big, small)
    print(name, measured)
    assert measured["shape"] == [MAX_SIDE, MAX_SIDE, 3]
    assert measured["peak_mb"] < 1.25 * decoded_mb + 64, measured
    assert measured["seconds"] < 10, measured


def test_float_pictures_keep_their_range_when_shrunk():
    # 0..1 floats whose shrinking rings a little past 1 are still read as 0..1 (judged before shrinking).
    values = np.zeros((3000, 3000), np.float32)
    values[:, 1500:] = 1.0
    image = load_image(encode(Image.fromarray(values, "F"), "TIFF"))
    assert image.shape == (MAX_SIDE, MAX_SIDE, 3)
    assert image[10, 10, 0] == 0 and image[10, -10, 0] == 255


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_big_images_are_downscaled(fmt):
    image = load_image(encode(quadrants(4000, 3000), fmt))
    assert image.shape == (1536, 2048, 3)
    assert close_to(image[100, 100], RED) and close_to(image[-100, -100], BLUE)


def test_downscale_to_keeps_aspect_and_small_images():
    small = np.zeros((10, 20, 3), np.uint8)
    assert downscale_to(small, 100) is small
    assert downscale_to(np.zeros((1000, 3000, 3), np.uint8), 300).shape == (100, 300, 3)
    assert downscale_to(np.zeros((5000, 1), np.uint8), 100).shape == (100, 1)


# --- colour modes and bit depths -----------------------------------------------------------------


def test_grayscale_becomes_three_equal_channels():
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (5, 1))
    image = load_image(encode(Image.fromarray(gray), "PNG"))
    assert_rgb(image)
    assert np.array_equal(image[:, :, 0], gray)
    assert np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 1], image[:, :, 2])


def test_rgba_is_composited_on_white():
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (255, 0, 0, 0)  # fully transparent
    rgba[0, 2] = (0, 0, 0, 128)  # half-transparent black
    image = load_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert tuple(image[0, 0]) == RED
    assert tuple(image[0, 1]) == WHITE
    assert close_to(image[0, 2], (127, 127, 127), tolerance=1)


def test_gray_with_alpha_is_composited_on_white():
    la = Image.fromarray(np.array([[[0, 255], [0, 0]]], np.uint8), "LA")
    image = load_image(encode(la, "PNG"))
    assert tuple(image[0, 0]) == (0, 0, 0) and tuple(image[0, 1]) == WHITE


def test_palette_transparency_is_composited_on_white():
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((0, 0), 0)
    image = load_image(encode(palette, "GIF", transparency=0))
    assert tuple(image[0, 0]) == WHITE and tuple(image[1, 1]) == RED


def test_16_bit_grayscale_is_scaled_not_clipped():
    values = np.array([[0, 1000, 32896, 65535]], np.uint16)
    image = load_image(encode(Image.fromarray(values), "PNG"))
    # Clipping (what Pillow's convert("L") does) would turn 1000 and 32896 into 255.
    assert list(image[0, :, 0]) == [0, 4, 128, 255]


def test_16_bit_colour_png_is_scaled_to_8_bit():
    bgr = np.zeros((2, 2, 3), np.uint16)
    bgr[...] = (0, 32896, 65535)  # OpenCV writes BGR: blue 0, green half, red full
    ok, encoded = cv2.imencode(".png", bgr)
    assert ok
    image = load_image(encoded.tobytes())
    assert tuple(image[0, 0]) == (255, 128, 0)


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # no cyan, full magenta and yellow: red
    image = load_image(encode(cmyk, "JPEG", quality=95))
    assert_rgb(image)
    assert close_to(image[8, 8], RED, tolerance=20)


# --- orientation and animation -------------------------------------------------------------------


def with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_exif_transpose(orientation):
    data = with_orientation(quadrants(), orientation)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert np.array_equal(load_image(data), expected)


@pytest.mark.parametrize(
    "orientation, red_corner",
    [(1, (0, 0)), (6, (0, -1)), (8, (-1, 0)), (3, (-1, -1))],
)
def test_exif_rotated_photo_comes_out_upright(orientation, red_corner):
    image = load_image(with_orientation(quadrants(60, 40), orientation))
    assert image.shape == ((40, 60, 3) if orientation in (1, 3) else (60, 40, 3))
    near, far = {0: 5, -1: -6}, {0: -6, -1: 5}
    assert close_to(image[near[red_corner[0]], near[red_corner[1]]], RED, tolerance=30)
    assert close_to(image[far[red_corner[0]], far[red_corner[1]]], BLUE, tolerance=30)


def test_big_rotated_photo_is_downscaled_and_upright():
    image = load_image(with_orientation(quadrants(3000, 2000), 6))
    assert image.shape == (2048, 1365, 3)
    assert close_to(image[50, -50], RED, tolerance=30)


def animation(fmt: str, **options) -> bytes:
    frames = [Image.new("RGB", (8, 8), color) for color in (RED, GREEN, BLUE)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **options)


@pytest.mark.parametrize(
    "fmt, options",
    [
        ("GIF", {}),
        pytest.param(
            "WEBP",
            {"lossless": True},
            marks=pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP"),
        ),
    ],
)
def test_animated_images_give_their_first_frame(fmt, options):
    data = animation(fmt, **options)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    image = load_image(data)
    assert image.shape == (8, 8, 3)
    assert close_to(image[4, 4], RED, tolerance=2)


# --- other source kinds --------------------------------------------------------------------------


def test_paths_and_bytes_agree(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(PNG)
    results = [load_image(path), load_image(str(path)), load_image(PNG), load_image(bytearray(PNG))]
    for result in results:
        assert np.array_equal(result, results[0])
    assert results[0].shape == (40, 60, 3)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "I;16", "1", "CMYK"])
def test_pil_images_of_any_mode(mode):
    image = load_image(Image.new(mode, (7, 5)))
    assert_rgb(image)
    assert image.shape == (5, 7, 3)


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.full((2, 3), 7, np.uint8), 7),
        (np.full((2, 3, 1), 7, np.uint8), 7),
        (np.full((2, 3, 3), 7, np.uint8), 7),
        (np.dstack([np.full((2, 3, 3), 7, np.uint8), np.full((2, 3), 255, np.uint8)]), 7),
        (np.full((2, 3, 2), 255, np.uint8), 255),
        (np.full((2, 3), 32896, np.uint16), 128),
        (np.full((2, 3), 0.5, np.float32), 128),
        (np.full((2, 3, 3), 200.0, np.float64), 200),
        (np.full((2, 3), np.nan, np.float32), 0),
        (np.full((2, 3), 300, np.int64), 255),
        (np.full((2, 3), -5, np.int16), 0),
        (np.ones((2, 3), bool), 255),
    ],
)
def test_numpy_arrays_of_any_layout_and_dtype(array, expected):
    image = load_image(array)
    assert_rgb(image)
    assert image.shape == (2, 3, 3)
    assert np.all(image == expected)
    assert not np.shares_memory(image, array)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((0, 5), np.uint8),
        np.zeros((5,), np.uint8),
        np.zeros((2, 2, 5), np.uint8),
        np.zeros((2, 2, 3, 1), np.uint8),
        np.zeros((2, 2), np.complex64),
        np.array([["a", "b"]]),
    ],
)
def test_bad_arrays_are_refused(array):
    with pytest.raises(ImageError, match=BAD_SHAPE):
        load_image(array)


def test_big_arrays_are_downscaled():
    assert load_image(np.zeros((100, 4096, 3), np.uint8)).shape == (50, 2048, 3)


# --- fuzzing: only ever a valid image or ImageError ----------------------------------------------

SEEDS = [
    PNG,
    JPEG,
    encode(quadrants(), "JPEG", progressive=True),
    with_orientation(quadrants(), 6),
    encode(Image.new("RGBA", (9, 7), (1, 2, 3, 4)), "PNG"),
    encode(Image.fromarray(np.full((4, 4), 999, np.uint16)), "PNG"),
    encode(Image.new("CMYK", (8, 8)), "JPEG"),
    encode(Image.new("RGB", (6, 6)), "BMP"),
    encode(Image.new("RGB", (6, 6)), "TIFF"),
    encode(Image.new("F", (6, 6), 0.5), "TIFF"),  # float and 16-bit pictures take their own path (shrink first)
    flat_png(6, 6, 16),
    animation("GIF"),
] + ([animation("WEBP")] if features.check("webp") else [])


def assert_valid_or_image_error(data: bytes) -> None:
    try:
        image = load_image(data)
    except ImageError as error:
        assert str(error) in (UNREADABLE, TOO_LARGE, EMPTY)
    else:
        assert_rgb(image)


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_fuzz_arbitrary_bytes(data):
    assert_valid_or_image_error(data)


@st.composite
def mutated_images(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_images())
def test_fuzz_mutated_images(data):
    assert_valid_or_image_error(data)


def test_seeds_decode():
    for seed in SEEDS:
        assert_rgb(load_image(seed))


def test_paths_are_accepted_as_pathlike(tmp_path):
    path = Path(tmp_path) / "x.bmp"
    path.write_bytes(encode(Image.new("RGB", (3, 2), GREEN), "BMP"))
    assert tuple(load_image(path)[1, 2]) == GREEN
