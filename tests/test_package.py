import emotion


def test_public_api_is_explicit():
    assert sorted(emotion.__all__) == ["EmotionRecognizer", "Face", "FaceDetector", "LABELS"]
    for name in emotion.__all__:
        assert hasattr(emotion, name)
