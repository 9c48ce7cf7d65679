import numpy as np
import pytest

from emotion import ferplus
from emotion.labels import LABELS

HEADER = "split,label,file,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
ROWS = [
    "train,angry,Training_1.jpg,2,0,0,1,7,0,0,0,0,0",  # anger majority
    "train,happy,Training_2.jpg,0,5,5,0,0,0,0,0,0,0",  # a tie: no majority
    "val,sad,PublicTest_3.jpg,1,0,0,2,0,0,0,0,6,1",  # most votes for unknown: left out
    "val,fear,PublicTest_4.jpg,0,0,0,0,0,0,0,3,4,3",  # no vote among the 7 labels
    "val,neutral,PublicTest_5.jpg,0,0,1,0,0,0,0,9,0,0",  # contempt majority, one surprise vote
]


@pytest.fixture
def votes_file(tmp_path):
    path = tmp_path / "fer2013" / ferplus.VOTES_FILENAME
    path.parent.mkdir()
    path.write_text(HEADER + "\n".join(ROWS) + "\n")
    return path


def test_votes_are_read_by_file_stem(votes_file):
    votes = ferplus.read_votes(votes_file)
    assert set(votes) == {"Training_1", "Training_2", "PublicTest_3", "PublicTest_4", "PublicTest_5"}
    np.testing.assert_array_equal(votes["Training_1"], [2, 0, 0, 1, 7, 0, 0, 0, 0, 0])


def test_distributions_keep_the_7_labels_and_mark_faces_without_votes(votes_file, tmp_path):
    votes = ferplus.read_votes(votes_file)
    paths = [tmp_path / "angry" / "Training_1.png", tmp_path / "fear" / "PublicTest_4.png",
             tmp_path / "neutral" / "PublicTest_5.png", tmp_path / "x" / "not_listed.png"]
    dist, has_votes = ferplus.distributions(ferplus.votes_for(paths, votes))
    assert dist.shape == (4, len(LABELS)) and has_votes.tolist() == [True, False, True, False]
    expected = np.zeros(len(LABELS))
    expected[[LABELS.index("angry"), LABELS.index("neutral"), LABELS.index("sad")]] = [0.7, 0.2, 0.1]
    np.testing.assert_allclose(dist[0], expected)
    assert dist[2][LABELS.index("surprise")] == 1.0  # contempt votes dropped, the one basic vote left
    assert not dist[[1, 3]].any()


def test_majority_leaves_out_ties_and_non_basic_majorities(votes_file):
    votes = np.stack(list(ferplus.read_votes(votes_file).values()))
    assert ferplus.majority(votes).tolist() == [LABELS.index("angry"), -1, -1, -1, -1]


def test_the_votes_file_is_found_beside_the_data(votes_file, tmp_path):
    data = tmp_path / "fer2013-raw" / "val"
    data.mkdir(parents=True)
    assert ferplus.find_votes(data) == votes_file.resolve()
    (votes_file).unlink()
    assert ferplus.find_votes(data) is None


def test_a_file_without_vote_columns_is_refused(tmp_path):
    bad = tmp_path / "votes.csv"
    bad.write_text("file,happy\na.jpg,3\n")
    with pytest.raises(ValueError, match="not a FER\\+ votes file"):
        ferplus.read_votes(bad)
    bad.write_text(HEADER + "train,angry,a.jpg,x,0,0,0,0,0,0,0,0,0\n")
    with pytest.raises(ValueError, match="whole number"):
        ferplus.read_votes(bad)
