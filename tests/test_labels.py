from emotion.labels import COLORS, LABELS


def test_label_order_is_the_fer2013_order():
    assert LABELS == ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def test_each_label_has_a_distinct_colour():
    assert set(COLORS) == set(LABELS)
    assert len(set(COLORS.values())) == len(LABELS)
