"""dataset_cv: each dataset's protocol, and no subject on both sides of a split."""


import numpy as np
import pytest
from sklearn.dummy import DummyRegressor
from sklearn.model_selection import (
    GroupKFold,
    KFold,
    LeaveOneGroupOut,
    PredefinedSplit,
    cross_validate,
)
from sklearn.utils import Bunch

from skagegender.datasets import load_adience, load_fgnet, load_utkface
from skagegender.model_selection import dataset_cv


def _assert_subject_disjoint(cv, groups, n):
    X = np.zeros((n, 1))
    seen_test = np.zeros(n, dtype=int)
    splits = list(cv.split(X, groups=None if isinstance(cv, PredefinedSplit) else groups))
    for train, test in splits:
        assert set(groups[train]).isdisjoint(groups[test])
        seen_test[test] += 1
    assert (seen_test == 1).all()  # every image is tested exactly once
    return splits


@pytest.mark.shared_data
def test_fgnet_leave_one_person_out(shared_data):
    data = load_fgnet(shared_data / "FGNET")
    cv, groups = dataset_cv(data, n_splits=5)
    assert isinstance(cv, LeaveOneGroupOut)
    splits = _assert_subject_disjoint(cv, groups, len(data.paths))
    assert len(splits) == len(set(data.subject)) >= 10  # one split per person
    assert all(len(set(groups[test])) == 1 for _, test in splits)


@pytest.mark.shared_data
def test_adience_official_folds(shared_data):
    data = load_adience((shared_data / "Adience"), require_images=False)
    cv, groups = dataset_cv(data)
    assert isinstance(cv, PredefinedSplit) and groups is None  # PredefinedSplit ignores groups
    splits = _assert_subject_disjoint(cv, data.subject, len(data.paths))
    assert [len(test) for _, test in splits] == [4432, 3693, 2567, 1043, 2085]
    for k, (_, test) in enumerate(splits):
        assert (data.fold[test] == k).all()


def test_predefined_folds_that_share_a_subject_are_refused():
    data = Bunch(name="adience", fold=np.array([0, 0, 1, 1]),
                 subject=np.array(["a", "b", "b", "c"], dtype=object))
    with pytest.raises(ValueError, match="subject 'b' is in folds 0 and 1"):
        dataset_cv(data)


def test_subject_ids_give_shuffled_group_kfold():
    rng = np.random.default_rng(0)
    subject = np.sort(rng.integers(0, 40, size=300)).astype(str).astype(object)  # MORPH order
    data = Bunch(name="morph2", fold=None, subject=subject)
    cv, groups = dataset_cv(data, n_splits=4, random_state=0)
    assert isinstance(cv, GroupKFold)
    splits = _assert_subject_disjoint(cv, groups, len(subject))
    assert len(splits) == 4
    # shuffled: the first test fold is not simply the lowest subject ids
    first_test = set(groups[splits[0][1]])
    assert first_test != set(sorted(set(subject))[: len(first_test)])
    again, _ = dataset_cv(data, n_splits=4, random_state=0)
    assert all((a[1] == b[1]).all() for a, b in zip(splits, again.split(np.zeros((300, 1)),
                                                                        groups=groups)))


@pytest.mark.slow
@pytest.mark.shared_data
def test_utkface_without_subjects_uses_shuffled_kfold(shared_data):
    data = load_utkface(shared_data / "UTKFace")
    cv, groups = dataset_cv(data, n_splits=5, random_state=0)
    assert isinstance(cv, KFold) and groups is None
    # names sort by age, so an unshuffled split would test on one age range per fold
    result = cross_validate(DummyRegressor(), np.zeros((len(data.age), 1)), data.age, cv=cv,
                            scoring="neg_mean_absolute_error")
    test_ages = [data.age[test].mean() for _, test in cv.split(data.age)]
    assert np.ptp(test_ages) < 1.0
    assert np.ptp(result["test_score"]) < 1.0


def test_fgnet_without_subjects_and_bad_n_splits():
    with pytest.raises(ValueError, match="leave one person out"):
        dataset_cv(Bunch(name="fgnet", fold=None, subject=None))
    with pytest.raises(ValueError, match="n_splits"):
        dataset_cv(Bunch(name="morph2", fold=None, subject=None), n_splits=1)
