"""The long-tailed subset: shaped like its profile, reproducible, written as split files."""
import numpy as np
import pytest

from detrlib.data.longtail import longtail_sets, parse_profile, select_longtail, target_counts, write_longtail
from detrlib.data.toy import ToySpec, make_toy_voc
from detrlib.data.voc import VOCDataset


def test_profiles_parse_and_bad_names_say_what_works():
    assert parse_profile("exp50") == ("exp", 50.0) and parse_profile("step10") == ("step", 10.0)
    for bad in ("exp", "zipf10", "exp0.5"):
        with pytest.raises(ValueError, match="exp<R> or step<R>"):
            parse_profile(bad)


def test_targets_follow_the_profile_shape_and_never_exceed_what_a_class_has():
    counts = np.array([100, 400, 300, 200, 50])
    exp = target_counts(counts, "exp16")
    assert exp.tolist() == [50, 400, 200, 100, 25]  # by rank: 400 * 16 ** (-rank / 4); the rarest 1/16
    assert (exp <= counts).all()
    # step: the more frequent half (3 of 5) keeps its count, the rest get 400 / 4
    assert target_counts(np.array([350, 400, 300, 200, 380]), "step4").tolist() == [350, 400, 100, 100, 380]


@pytest.fixture(scope="module")
def balanced(tmp_path_factory):
    # a toy VOC without imbalance, so the subset has to make the long tail itself
    root = tmp_path_factory.mktemp("balanced")
    year_dir = make_toy_voc(root, 300, 0, seed=0, spec=ToySpec(imbalance=1.0, max_objects=3))
    return VOCDataset([(year_dir, "train")])


def test_subset_is_long_tailed_and_reproducible(balanced):
    from detrlib.data.longtail import per_image_counts

    table = per_image_counts(balanced)
    keep = select_longtail(table, "exp10", seed=0)
    after = table[keep].sum(0)
    assert after.max() / max(after.min(), 1) >= 5
    assert after.max() >= 0.6 * table.sum(0).max()  # the head keeps most of its objects
    assert np.array_equal(keep, select_longtail(table, "exp10", seed=0))
    assert not np.array_equal(keep, select_longtail(table, "exp10", seed=1))


def test_split_files_are_written_and_read_back(balanced):
    new_sets, before, after = write_longtail(balanced, "exp10", seed=0)
    (year_dir, split), = new_sets
    assert split == "train-exp10-s0" and (year_dir / "ImageSets" / "Main" / "train-exp10-s0.txt").exists()
    subset = VOCDataset(new_sets)
    assert len(subset) < len(balanced)
    counts = subset.class_counts()
    assert [counts[c] for c in subset.classes] == after.tolist()
    assert before.sum() > after.sum()
    assert longtail_sets(balanced.sets, "exp10", 0) == new_sets
