"""Build examples/composite_four_faces.jpg from four real photos in this folder.

The composite is a 2x2 grid of head-and-shoulders crops of four public-domain
photographs (see README.md for the provenance of each):

    grace_hopper.jpg        | astronaut.jpg
    obama_speech.jpg        | biden_arms_crossed.jpg

Each crop is a square centred on the face box that OpenCV's frontal-face Haar
cascade reports for that file (the boxes are fixed below, so the output does
not depend on the detector's version). Re-run from the repository root with:

    python examples/make_composite.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "composite_four_faces.jpg"

# file -> face box (x, y, w, h) in that file's pixels, as found by
# cv2.CascadeClassifier(haarcascade_frontalface_default.xml)
#     .detectMultiScale(gray, 1.1, 5, minSize=(40, 40))
SOURCES: list[tuple[str, tuple[int, int, int, int]]] = [
    ("grace_hopper.jpg", (155, 105, 222, 222)),
    ("astronaut.jpg", (177, 66, 95, 95)),
    ("obama_speech.jpg", (143, 244, 334, 334)),
    ("biden_arms_crossed.jpg", (325, 207, 324, 324)),
]

TILE = 360          # side of each square tile, in pixels
CONTEXT = 2.0       # crop side = CONTEXT * face width
GUTTER = 8          # white gap between tiles
BACKGROUND = (255, 255, 255)


def square_crop(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """Square crop around a face box, clamped inside the image."""
    x, y, w, h = box
    side = min(int(round(CONTEXT * max(w, h))), image.width, image.height)
    cx = x + w / 2
    cy = y + h / 2 + 0.1 * h  # a little lower, to keep some chin and shoulders
    left = int(round(min(max(cx - side / 2, 0), image.width - side)))
    top = int(round(min(max(cy - side / 2, 0), image.height - side)))
    return image.crop((left, top, left + side, top + side))


def build() -> Image.Image:
    tiles = []
    for name, box in SOURCES:
        with Image.open(HERE / name) as im:
            tile = square_crop(im.convert("RGB"), box)
        tiles.append(tile.resize((TILE, TILE), Image.LANCZOS))
    side = 2 * TILE + 3 * GUTTER
    canvas = Image.new("RGB", (side, side), BACKGROUND)
    for i, tile in enumerate(tiles):
        row, col = divmod(i, 2)
        canvas.paste(tile, (GUTTER + col * (TILE + GUTTER), GUTTER + row * (TILE + GUTTER)))
    return canvas


def main() -> None:
    build().save(OUTPUT, quality=90, optimize=True)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
