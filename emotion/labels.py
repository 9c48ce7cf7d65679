"""The 7 FER2013 emotion labels, in the one order every model output uses."""

LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")

# One BGR-free RGB colour per emotion, chosen to stay distinct on photos.
COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (230, 40, 40),
    "disgust": (120, 170, 30),
    "fear": (150, 70, 200),
    "happy": (250, 200, 0),
    "neutral": (170, 170, 170),
    "sad": (40, 110, 230),
    "surprise": (250, 120, 20),
}
