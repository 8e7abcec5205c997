"""One rule for "no face" across AgeGenderModel's methods and a Pipeline; warnings point at
the user's line."""

import warnings

import numpy as np
import pytest
from sklearn.pipeline import make_pipeline

from skagegender.heads import GenderClassifier
from skagegender.pretrained import load

BLANK = np.full((200, 200, 3), 90, np.uint8)


@pytest.fixture(scope="module")
def fast():
    return load("fast")


@pytest.mark.slow
def test_no_face_is_nan_in_every_method_and_in_a_pipeline(fast, portrait):
    with pytest.warns(UserWarning, match="1 of 2 images got NaN features"):
        ages = fast.predict([BLANK, portrait])
    assert np.isnan(ages[0]) and 20 < ages[1] < 90

    with pytest.warns(UserWarning, match="1 of 2"):
        details = fast.predict_details([BLANK, portrait])  # images, like predict
    assert details["found"].tolist() == [False, True]
    assert np.isnan(details["age"][0]) and details["age"][1] == pytest.approx(ages[1])
    assert details["gender"][0] is None and details["gender"][1] in ("male", "female")
    assert np.isnan(details["gender_probability"][0])
    assert fast.predict_faces(BLANK) == []

    pipe = make_pipeline(fast.embedder_, fast.age_head_)
    with pytest.warns(UserWarning, match="1 of 2"):
        piped = pipe.predict([BLANK, portrait])
    np.testing.assert_allclose(piped, ages)  # same NaN, same age

    rows = fast.embedder_.transform([portrait])
    np.testing.assert_allclose(fast.predict_features(rows)["age"], ages[1:])
    with pytest.raises(TypeError, match="use predict_features"):
        fast.predict_details(rows)


def _warnings_of(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [w for w in caught if issubclass(w.category, UserWarning)]


def test_head_warning_points_at_this_file_directly_and_through_a_pipeline():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4))
    X[:3] = np.nan
    y = np.where(rng.random(40) < 0.5, "female", "male")
    head = GenderClassifier(head="ordinal")
    for call in (lambda: head.fit(X, y), lambda: make_pipeline(head).fit(X, y)):
        caught = _warnings_of(call)
        assert [str(w.message) for w in caught] == [(
            "GenderClassifier: dropped 3 of 40 training rows that contain NaN (no face "
            "found upstream).")]
        assert caught[0].filename == __file__


@pytest.mark.slow
def test_missing_face_warning_points_at_this_file(fast):
    for call in (lambda: fast.predict([BLANK]), lambda: fast.embedder_.transform([BLANK]),
                 lambda: make_pipeline(fast.embedder_, fast.age_head_).predict([BLANK])):
        caught = _warnings_of(call)
        assert len(caught) == 1 and "NaN features" in str(caught[0].message)
        assert caught[0].filename == __file__
