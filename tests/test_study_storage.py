"""The public storage helpers of model_selection: open, redact, check stored trials."""

import pytest

optuna = pytest.importorskip("optuna")

from optuna.distributions import FloatDistribution
from sklearn.linear_model import Ridge

from skagegender.model_selection import (
    HeadSearchCV,
    StudyError,
    check_study_trials,
    open_storage,
    redact_storage_url,
)

SPACE = {"alpha": FloatDistribution(1e-3, 1e3, log=True)}


def _study_with(value, splits, alpha=1.0):
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(
        params={"alpha": alpha}, distributions=SPACE, value=value,
        user_attrs={"split_test_score": splits}))
    return study


@pytest.mark.parametrize("scoring, value, splits, problem", [
    ("r2", 0.5, [0.4, 0.6], None),
    ("r2", 5.0, [5.0, 5.0], "outside the scorer's range"),
    ("neg_mean_absolute_error", 1.0, [1.0, 1.0], "outside the scorer's range"),
    ("r2", 0.5, [0.1, 0.2], "not the mean of its per-split scores"),
    (lambda est, X, y: 0.0, 5.0, [5.0, 5.0], None),  # a callable: any finite value
    (lambda est, X, y: 0.0, float("inf"), [1.0], "outside the scorer's range"),
])
def test_check_study_trials_refuses_forged_scores(scoring, value, splits, problem):
    search = HeadSearchCV(Ridge(), SPACE, scoring=scoring)
    study = _study_with(value, splits)
    if problem is None:
        check_study_trials(search, study)
        return
    with pytest.raises(StudyError, match=f"in the storage holds 1 trial that .*{problem}"):
        check_study_trials(search, study)


def test_check_study_trials_refuses_parameters_outside_the_space():
    search = HeadSearchCV(Ridge(), {"alpha": FloatDistribution(1e-3, 1.0, log=True)},
                          scoring="r2")
    with pytest.raises(StudyError, match="after the search holds 1 trial"):
        check_study_trials(search, _study_with(0.5, [0.5], alpha=100.0), when="after the search")


def test_storage_urls_are_shown_without_their_password(tmp_path):
    assert redact_storage_url("postgresql://u:s3cret@host/db") == "postgresql://u:***@host/db"
    assert redact_storage_url("sqlite:///tune.db") == "sqlite:///tune.db"
    assert redact_storage_url("not a url") is None
    with pytest.raises(StudyError, match="cannot be parsed"):
        open_storage("not a url")
    storage = open_storage(f"sqlite:///{tmp_path / 't.db'}", heartbeat_interval=5,
                           grace_period=30)
    assert storage.heartbeat_interval == 5 and storage.grace_period == 30
