"""``skagegender train --help`` says what ``--recipe fast`` trains, and it does just that."""

import numpy as np
import pytest

from skagegender.cli import main


def test_train_help_says_the_fast_recipe_learns_no_age(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert ("'fast' (the fast model's features and heads: its age is the dlib age network's "
            "expected age as is, learned from none of these images; only the gender head is "
            "trained)") in text


@pytest.mark.slow
def test_the_fast_recipe_learns_gender_and_no_age_from_the_faces():
    from skagegender.embedding._chipnets import DLIB_AGE_CLASSES
    from skagegender.training import fit_recipe

    rng = np.random.default_rng(0)
    n = 60
    age_probs = rng.dirichlet(np.full(81, 0.3), size=n)
    female = rng.uniform(size=n)
    features = np.column_stack([age_probs, female, 1 - female]).astype(np.float32)
    gender = np.where(female > 0.5, "female", "male")
    young = fit_recipe("fast", features, np.full(n, 3.0), gender)
    flipped = np.where(gender == "female", "male", "female")
    old = fit_recipe("fast", features, np.full(n, 70.0), flipped)
    expected = age_probs @ DLIB_AGE_CLASSES
    for model in (young, old):  # the labels' ages change nothing: the network's own age
        np.testing.assert_allclose(model.predict_features(features)["age"], expected, rtol=1e-5)
    # the gender head is learned: reversed labels give the opposite answers
    assert (young.predict_features(features)["gender"]
            != old.predict_features(features)["gender"]).mean() > 0.8
