"""Decode whatever a user uploads into an upright RGB uint8 array of bounded size."""

import ctypes
import io
import math
import os

import cv2
import numpy as np
from PIL import Image

MAX_SIDE = 2048  # output longest side; faces stay far above the 48 px model input
# Refuse anything bigger before decoding a pixel. 64 MP covers 48-50 MP phone photos and 61 MP
# full-frame cameras; a full decode stays under ~256 MB (64 MP RGBA), and JPEGs, the usual big
# photos, are decoded at 1/2..1/8 scale (draft) so they cost far less.
MAX_PIXELS = 64_000_000
# Deliberately process-wide (this process decodes untrusted uploads): Pillow warns above this and
# raises DecompressionBombError above twice it, a backstop should any path skip our own check.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

NO_IMAGE = "No image was provided."
EMPTY = "The file is empty."
UNREADABLE = "This file is not an image we can read (it may be corrupt, truncated or in an unsupported format)."
TOO_LARGE = f"This image is too large: please use one under {MAX_PIXELS // 1_000_000} megapixels."
BAD_SHAPE = "This picture has an unexpected layout; we need a grayscale, colour or colour-with-transparency image."

_ORIENTATION = 0x0112


class ImageError(ValueError):
    """An upload we cannot use; the message is written for the person who uploaded it."""


def load_image(source: str | os.PathLike | bytes | np.ndarray | Image.Image | None) -> np.ndarray:
    """Return `source` as an upright HxWx3 RGB uint8 array whose longest side is at most MAX_SIDE.

    Accepts a file path, encoded bytes, a PIL image or a numpy array (HxW, HxWx1/2/3/4, any real
    dtype). Animated images give their first frame; transparency is composited on white.
    Raises ImageError, with a message for the user, for anything unusable.
    """
    if source is None:
        raise ImageError(NO_IMAGE)
    if isinstance(source, np.ndarray):
        return downscale_to(_array_to_rgb(source), MAX_SIDE)
    if isinstance(source, Image.Image):
        return _read(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError(EMPTY)
        return _read(io.BytesIO(source))
    if isinstance(source, (str, os.PathLike)):
        try:
            empty = os.path.getsize(source) == 0
        except (OSError, ValueError) as exc:
            raise ImageError("We could not open this file.") from exc
        if empty:
            raise ImageError(EMPTY)
        return _read(source)
    raise TypeError(f"load_image() cannot read a {type(source).__name__}")


def return_big_buffers_to_the_os(threshold: int = 1 << 20) -> bool:
    """Make glibc's malloc serve every block of at least `threshold` bytes by mmap, so that freeing one gives its
    memory back to the OS at once. Call once per process, at start.

    By default glibc raises that threshold as big blocks are freed, and then keeps them in each thread's arena:
    8 threads decoding an 8000x8000 float TIFF (2 at a time) peaked 2.4 GB above the start and kept 1.9 GB when
    done; with a fixed 1 MB threshold, 0.65 GB and nothing kept, and the photo pipeline as fast (134 ms per two
    example photos with 1 MB or 32 MB, alternated in one process). False where the C library is not glibc.
    """
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, threshold))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def downscale_to(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink `image` (keeping its aspect ratio) so its longest side is at most `max_side`."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _read(source: str | os.PathLike | io.BytesIO | Image.Image) -> np.ndarray:
    try:
        if isinstance(source, Image.Image):
            return _decode(source)
        with Image.open(source) as image:
            _check_size(image.size)
            if image.format == "JPEG":
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: big photos cost a fraction of the memory.
                image.draft(None, _fit(image.size, MAX_SIDE))
            return _decode(image)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(TOO_LARGE) from exc
    except Exception as exc:
        # Pillow's plugins raise a zoo of exceptions on hostile bytes (OSError, SyntaxError,
        # struct.error, IndexError, ...); whatever the cause, the upload is unreadable.
        raise ImageError(UNREADABLE) from exc


def _decode(image: Image.Image) -> np.ndarray:
    _check_size(image.size)
    orientation = _orientation(image)
    image.load()  # surfaces truncation and corruption here, as an exception
    if image.mode.startswith("I") or image.mode == "F":
        # 16-bit, 32-bit and float pictures: shrink in their own mode first, then map to 8 bit. At full size the
        # mapping's float copies cost ~1 GB for an 8000x8000 float TIFF that compresses to a few hundred KB.
        image = _high_bit_to_8bit(image)
    else:
        image = _shrink(_to_8bit_mode(image))
    # Rotate after shrinking (ImageOps.exif_transpose would rotate the full-size image first).
    if orientation in _UPRIGHT:
        image = image.transpose(_UPRIGHT[orientation])
    return _array_to_rgb(np.asarray(image))


# EXIF Orientation value -> the transpose that makes the picture upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _check_size(size: tuple[int, int]) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(UNREADABLE)
    if width * height > MAX_PIXELS:
        raise ImageError(TOO_LARGE)


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """`size` scaled so its longest side is `max_side` (if it is bigger)."""
    scale = min(1.0, max_side / max(size))
    return max(1, math.floor(size[0] * scale)), max(1, math.floor(size[1] * scale))


def _orientation(image: Image.Image) -> int | None:
    """The EXIF Orientation (1-8) if the image has a readable one."""
    try:
        value = image.getexif().get(_ORIENTATION)
    except Exception:  # broken EXIF should not cost the user their (otherwise fine) photo
        return None
    return value if isinstance(value, int) else None


def _shrink(image: Image.Image) -> Image.Image:
    """`image` with its longest side at most MAX_SIDE (high-quality resampling)."""
    if max(image.size) <= MAX_SIDE:
        return image
    # Pillow's fast integer pre-reduction (reducing_gap) has no 16-bit modes.
    gap = None if image.mode.startswith("I;16") else 3.0
    return image.resize(_fit(image.size, MAX_SIDE), Image.Resampling.LANCZOS, reducing_gap=gap)


def _high_bit_to_8bit(image: Image.Image) -> Image.Image:
    """An I;16*, I or F image shrunk (in its own mode) and rescaled to 8-bit L: the costly float maths is done
    on at most MAX_SIDE x MAX_SIDE pixels. A float image's range is judged from its full-size maximum."""
    peak = image.getextrema()[1] if image.mode == "F" else None  # computed in C, without a copy
    small = _shrink(image)
    return Image.fromarray(_to_uint8(np.asarray(small), sixteen_bit=image.mode != "F", peak=peak))


def _to_8bit_mode(image: Image.Image) -> Image.Image:
    """Convert an 8-bit-per-channel image to L, LA, RGB or RGBA (16-bit and float: see _high_bit_to_8bit)."""
    if image.mode in ("L", "LA", "RGB", "RGBA"):
        return image
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def _to_uint8(array: np.ndarray, sixteen_bit: bool = False, peak: float | None = None) -> np.ndarray:
    """Map an array of any real dtype to uint8.

    bool -> 0/255; uint16 (or `sixteen_bit`) -> 0..65535 scaled to 0..255; other integers are taken
    as 8-bit values and clipped; floats are taken as 0..1 when their maximum (`peak` if it is given
    and finite, e.g. the maximum before shrinking) is <= 1, else as 0..255.
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype.kind in "iu":
        if sixteen_bit or array.dtype == np.uint16:
            wide = np.clip(array, 0, 65535).astype(np.uint32)
            return ((wide * 255 + 32767) // 65535).astype(np.uint8)
        return np.clip(array, 0, 255).astype(np.uint8)
    if array.dtype.kind == "f":
        values = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        if peak is None or not math.isfinite(peak):
            peak = values.max() if values.size else 0.0
        if peak <= 1.0:
            values = values * 255.0
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    raise ImageError(BAD_SHAPE)


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    """HxW, HxWx1, HxWx2 (gray+alpha), HxWx3 or HxWx4 of any real dtype -> a new HxWx3 RGB uint8 array."""
    if array.size == 0 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 2, 3, 4)):
        raise ImageError(BAD_SHAPE)
    image = _to_uint8(array)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] in (2, 4):  # composite on white so transparent areas do not turn black
        alpha = image[:, :, -1:].astype(np.uint16)
        color = image[:, :, :-1].astype(np.uint16)
        image = ((color * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.array(image, dtype=np.uint8, order="C", copy=True)
