"""``skagegender train --help`` says what ``--recipe fast`` trains, and it does just that."""

import numpy as np
import pytest

from skagegender.cli import main


def test_train_help_says_what_the_fast_recipe_learns(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert ("'fast' (the fast model's features: the compact network's 230 outputs; its age, a "
            "blend of the network's expected age and an MLP, and its gender MLP are learned "
            "from 80% of these images and calibrated on the other 20%, held out as for "
            "'default'; the network itself is not retrained)") in text


def _compact_rows(age_probs, female, rng):
    """Rows laid out as the fast model's features: the compact network's embedding, 101
    ages and P(female), then the dlib age network's 81 age probabilities."""
    from skagegender.embedding import COMPACT_EMBEDDING_WIDTH
    from skagegender.training._fast_recipe import EMBEDDER_PARAMS

    assert EMBEDDER_PARAMS["layers"] == ("compact", "dlib_age")
    n = len(female)
    return np.column_stack([rng.normal(size=(n, COMPACT_EMBEDDING_WIDTH)), age_probs,
                            female, rng.dirichlet(np.full(81, 0.3), size=n)]
                           ).astype(np.float32)


@pytest.mark.slow
def test_the_fast_recipe_learns_age_and_gender_from_the_faces():
    """Labels that disagree with the network move the model: age and gender are learned."""
    from skagegender.embedding import COMPACT_AGE_CLASSES
    from skagegender.training import fit_recipe

    rng = np.random.default_rng(0)
    n = 400
    # the network says 30 for everyone; the labels follow the first embedding column
    age_probs = np.zeros((n, 101))
    age_probs[:, 30] = 1.0
    female = rng.uniform(size=n)
    features = _compact_rows(age_probs, female, rng)
    true_age = np.clip(40 + 15 * features[:, 0], 1, 90)
    gender = np.where(features[:, 1] > 0, "female", "male")  # not the network's P(female)
    model = fit_recipe("fast", features, true_age, gender)
    details = model.predict_features(features)
    network_age = age_probs @ COMPACT_AGE_CLASSES
    # the blend moves from the network's 30 towards the labels
    assert np.abs(details["age"] - true_age).mean() < 0.8 * np.abs(network_age - true_age).mean()
    assert np.corrcoef(details["age"], true_age)[0, 1] > 0.8
    assert (details["gender"] == gender).mean() > 0.65  # chance: 0.5
    # calibrated intervals and gender probabilities on held-out rows
    interval = details["age_interval"]
    assert np.isfinite(interval).all() and (interval[:, 0] <= details["age"]).all()
    assert ((interval[:, 0] <= true_age) & (true_age <= interval[:, 1])).mean() > 0.6
    assert type(model.age_head_).__name__ == "ConformalAgeRegressor"
    assert type(model.gender_head_).__name__ == "AgeAwareCalibratedClassifier"


@pytest.mark.slow
def test_the_fast_recipe_without_gender_labels_predicts_no_gender():
    from skagegender.training import fit_recipe

    rng = np.random.default_rng(1)
    n = 200
    age_probs = rng.dirichlet(np.full(101, 0.3), size=n)
    features = _compact_rows(age_probs, rng.uniform(size=n), rng)
    model = fit_recipe("fast", features, rng.uniform(5, 70, n), None)
    details = model.predict_features(features)
    assert np.isfinite(details["age"]).all()
    assert all(g is None for g in details["gender"])
