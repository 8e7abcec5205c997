"""The head families: each one's default estimators and default search space.

:data:`HEAD_FAMILIES` is the one registry of families; :func:`make_age_head`,
:func:`make_gender_head`, :class:`AgeRegressor`'s and :class:`GenderClassifier`'s
``head`` names, :func:`skagegender.model_selection.default_head_space` and the
``skagegender train`` options all read it.

Every family's estimator is a :class:`~sklearn.pipeline.Pipeline` whose final step is
named ``"model"``, so a family's hyperparameters are always reached as
``model__<param>`` (``head__model__alpha`` from :class:`AgeRegressor`).
"""

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.base import is_classifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ._ordinal import OrdinalLogisticRegression

__all__ = ["HEAD_FAMILIES", "HeadFamily", "available_head_families", "make_age_head",
           "make_gender_head"]


def _import_lightgbm():
    try:
        import lightgbm
    except ImportError as exc:
        raise ImportError(
            "The 'lightgbm' head needs the lightgbm package: "
            "pip install skagegender[lightgbm]"
        ) from exc
    return lightgbm


def _validation_fraction(n_samples):
    """Share of the training rows that the MLP families hold out for early stopping.

    5 %, but at least 10 rows (and at most half), so that a small fit still gets a
    validation split that holds every class and measures something.
    """
    if n_samples is None:
        return 0.05
    return min(0.5, max(0.05, 10 / n_samples))


def _batch_size(n_samples):
    """200 rows (scikit-learn's ``"auto"``), but at least 10 steps per epoch on small fits.

    Early stopping waits a number of epochs: with one batch per epoch, a fit of 200 rows
    would stop after a handful of optimizer steps, before it has learned anything.
    """
    if n_samples is None:
        return "auto"
    return int(min(200, max(1, n_samples // 10)))


def _mlp_params(n_samples):
    """What both MLP families share: stop on a held-out split, batches that fit any size.

    Training stops when the held-out score has not improved by ``tol`` for 5 epochs
    and keeps the best epoch's weights, so fits of any size converge inside ``max_iter``
    without a ``ConvergenceWarning``.
    """
    return {
        "batch_size": _batch_size(n_samples),
        "early_stopping": True,
        "validation_fraction": _validation_fraction(n_samples),
        "n_iter_no_change": 5,
        "tol": 1e-3,
        "max_iter": 200,
    }


class _SizedEarlyStopping:
    """Early stopping that fits the data, decided in ``fit`` (mixed into the family MLPs).

    A head built before its data is known (a search space's, or ``n_samples=None``)
    holds out 5 %: one row of 20. So ``fit`` holds out at least
    ``_validation_fraction(n)`` of the ``n`` rows (10 rows, at most half); when even
    that split cannot be made (fewer than 4 rows, or a class with fewer than 2 rows
    for a classifier's stratified split) it trains without early stopping, for up to
    ``max_iter`` epochs. The parameters are left as given.
    """

    def fit(self, X, y, sample_weight=None):
        if not self.early_stopping:
            return super().fit(X, y, sample_weight=sample_weight)
        y_array = np.asarray(y)
        n = len(y_array)
        fraction = max(self.validation_fraction, _validation_fraction(n))
        n_val = math.ceil(fraction * n)
        smallest = 2  # rows on each side of the split
        if is_classifier(self) and y_array.ndim == 1:  # stratified: every class on both sides
            counts = np.unique(y_array, return_counts=True)[1]
            smallest = len(counts) if counts.min() >= 2 else n + 1
        splittable = min(n_val, n - n_val) >= max(2, smallest)
        given = self.early_stopping, self.validation_fraction
        self.early_stopping, self.validation_fraction = splittable, fraction
        try:
            return super().fit(X, y, sample_weight=sample_weight)
        finally:
            self.early_stopping, self.validation_fraction = given


class _MLPRegressor(_SizedEarlyStopping, MLPRegressor):
    """:class:`~sklearn.neural_network.MLPRegressor` whose early stopping fits the data."""


class _MLPClassifier(_SizedEarlyStopping, MLPClassifier):
    """:class:`~sklearn.neural_network.MLPClassifier` whose early stopping fits the data."""


# -- default estimators: (random_state, n_samples) -> pipeline steps ------------------

def _mlp_steps(model_class, hidden, **extra):
    def steps(random_state, n_samples):
        model = model_class(hidden_layer_sizes=(hidden,), alpha=1e-2, random_state=random_state,
                            **extra, **_mlp_params(n_samples))
        return [("scale", StandardScaler()), ("model", model)]

    return steps


def _lightgbm_steps(kind, n_estimators):
    def steps(random_state, n_samples):
        model = getattr(_import_lightgbm(), kind)(
            n_estimators=n_estimators,
            learning_rate=0.05,
            num_leaves=31,
            colsample_bytree=0.3,
            random_state=random_state,
            verbose=-1,
        )
        return [("model", model)]

    return steps


def _ordinal_age_steps(random_state, n_samples):
    return [("model", OrdinalLogisticRegression(alpha=10.0))]


def _logistic_gender_steps(random_state, n_samples):
    # with two classes an ordinal model is a logistic regression
    return [("scale", StandardScaler()), ("model", LogisticRegression(C=0.05, max_iter=1000))]


# -- default search spaces: (trial, name) -> model-step parameters --------------------
# ``name`` prefixes every Optuna parameter with the family ("mlp__alpha",
# "ordinal__alpha"), so the sampler never mixes one family's alpha with another's.
# "mlp": hidden layer width (64-512) and depth (1-2), alpha (L2, 1e-5-1, log),
#   learning_rate_init (1e-4-1e-2, log).
# "lightgbm": n_estimators (50-600), num_leaves (7-63), min_child_samples (5-50),
#   learning_rate (0.01-0.3), colsample_bytree (0.1-1), reg_lambda (1e-8-10); log scales
#   except colsample_bytree.
# "ordinal": alpha (1e-2-1e3, log) of OrdinalLogisticRegression for age; C (1e-3-10,
#   log) of the logistic regression it is for two genders.

def _mlp_space(trial, name):
    width = trial.suggest_categorical(f"{name}width", [64, 128, 256, 512])
    depth = trial.suggest_int(f"{name}depth", 1, 2)
    return {
        "hidden_layer_sizes": (width,) * depth,
        "alpha": trial.suggest_float(f"{name}alpha", 1e-5, 1.0, log=True),
        "learning_rate_init": trial.suggest_float(f"{name}learning_rate_init", 1e-4, 1e-2,
                                                  log=True),
    }


def _lightgbm_space(trial, name):
    ints = [("n_estimators", 50, 600), ("num_leaves", 7, 63), ("min_child_samples", 5, 50)]
    floats = [("learning_rate", 0.01, 0.3, True), ("colsample_bytree", 0.1, 1.0, False),
              ("reg_lambda", 1e-8, 10.0, True)]
    params = {k: trial.suggest_int(f"{name}{k}", lo, hi, log=True) for k, lo, hi in ints}
    params.update({k: trial.suggest_float(f"{name}{k}", lo, hi, log=log)
                   for k, lo, hi, log in floats})
    return params


def _ordinal_age_space(trial, name):
    return {"alpha": trial.suggest_float(f"{name}alpha", 1e-2, 1e3, log=True)}


def _logistic_gender_space(trial, name):
    return {"C": trial.suggest_float(f"{name}C", 1e-3, 10.0, log=True)}


@dataclass(frozen=True)
class HeadFamily:
    """A head family: its default age and gender estimators and its search spaces.

    Parameters
    ----------
    name : str
        The family's name, as given to ``head=`` and ``--age-head``.
    age_steps, gender_steps : callable
        ``steps(random_state, n_samples) -> list of (name, estimator)``: the default
        pipeline, ending in a step named ``"model"``.
    age_space, gender_space : callable
        ``space(trial, name) -> dict``: the ``"model"`` step's parameters asked of an
        Optuna ``trial``, each Optuna parameter named ``name + <parameter>``.
    requires : str or None, default=None
        The optional package the family needs (``"lightgbm"``), imported when built.

    Examples
    --------
    >>> from skagegender.heads import HEAD_FAMILIES
    >>> list(HEAD_FAMILIES)
    ['mlp', 'lightgbm', 'ordinal']
    >>> HEAD_FAMILIES["ordinal"].make("gender", C=0.5)[-1]
    LogisticRegression(C=0.5, max_iter=1000)
    """

    name: str
    age_steps: Callable
    gender_steps: Callable
    age_space: Callable
    gender_space: Callable
    requires: str | None = None

    def is_available(self):
        """Whether the package the family needs is installed (without importing it)."""
        return self.requires is None or importlib.util.find_spec(self.requires) is not None

    def make(self, task, *, random_state=None, n_samples=None, **params):
        """The default unfitted estimator for ``task`` (``"age"`` or ``"gender"``).

        ``params`` override the ``"model"`` step's parameters.
        """
        steps = getattr(self, f"{task}_steps")(random_state, n_samples)
        head = Pipeline(steps)
        head.set_params(**{f"model__{key}": value for key, value in params.items()})
        return head

    def suggest(self, task, trial, *, prefix="", random_state=None):
        """The estimator for ``task`` with the hyperparameters ``trial`` suggests.

        Optuna parameters are named ``prefix + family + "__" + parameter``.
        """
        params = getattr(self, f"{task}_space")(trial, f"{prefix}{self.name}__")
        return self.make(task, random_state=random_state, **params)


#: The head families by name, in the order they are offered.
HEAD_FAMILIES = {
    family.name: family
    for family in (
        HeadFamily("mlp", _mlp_steps(_MLPRegressor, 256, learning_rate_init=2e-3),
                   _mlp_steps(_MLPClassifier, 128), _mlp_space, _mlp_space),
        HeadFamily("lightgbm", _lightgbm_steps("LGBMRegressor", 300),
                   _lightgbm_steps("LGBMClassifier", 200), _lightgbm_space, _lightgbm_space,
                   requires="lightgbm"),
        HeadFamily("ordinal", _ordinal_age_steps, _logistic_gender_steps, _ordinal_age_space,
                   _logistic_gender_space),
    )
}


def available_head_families():
    """Names of the families whose optional package is installed, in registry order.

    Returns
    -------
    families : tuple of str
    """
    return tuple(name for name, family in HEAD_FAMILIES.items() if family.is_available())


def _family(family, factory):
    if family not in HEAD_FAMILIES:
        raise ValueError(f"{factory}: unknown head family {family!r}; expected one of "
                         f"{tuple(HEAD_FAMILIES)}.")
    return HEAD_FAMILIES[family]


def make_age_head(family="mlp", *, random_state=None, n_samples=None, **params):
    """Build the default unfitted age estimator of a head family.

    Parameters
    ----------
    family : {"mlp", "lightgbm", "ordinal"}, default="mlp"
        A key of :data:`HEAD_FAMILIES`:

        - ``"mlp"``: standardisation then an
          :class:`~sklearn.neural_network.MLPRegressor` with early stopping (sized
          to the rows in ``fit``, see ``n_samples``): a regressor, because a
          label-distribution ``MLPClassifier`` had about twice its MAE (model card,
          "Measurements behind the defaults"); pass one as ``head`` to get
          :meth:`AgeRegressor.predict_distribution`.
        - ``"lightgbm"``: a ``lightgbm.LGBMRegressor`` (needs
          ``pip install skagegender[lightgbm]``).
        - ``"ordinal"``: :class:`OrdinalLogisticRegression` over integer ages.
    random_state : int, RandomState instance or None, default=None
        Seed of the model step, where it has one.
    n_samples : int or None, default=None
        Number of training rows, when known (:class:`AgeRegressor` passes it): the
        ``"mlp"`` family's batch size and held-out share for early stopping follow
        it. Whatever it was, ``fit`` holds out at least 10 rows (at most half) and
        trains without early stopping when no split can be made (fewer than 4 rows).
    **params
        Overrides of the model step's parameters (``alpha=1e-3``,
        ``n_estimators=100``).

    Returns
    -------
    head : Pipeline
        Its final step is named ``"model"``; ``"mlp"`` has a ``"scale"`` step before it.

    Examples
    --------
    >>> from skagegender.heads import make_age_head
    >>> head = make_age_head("mlp", alpha=1e-3)
    >>> [name for name, _ in head.steps]
    ['scale', 'model']
    >>> head.get_params()["model__alpha"]
    0.001
    """
    return _family(family, "make_age_head").make(
        "age", random_state=random_state, n_samples=n_samples, **params)


def make_gender_head(family="mlp", *, random_state=None, n_samples=None, **params):
    """Build the default unfitted gender estimator of a head family.

    Parameters
    ----------
    family : {"mlp", "lightgbm", "ordinal"}, default="mlp"
        A key of :data:`HEAD_FAMILIES`:

        - ``"mlp"``: standardisation then an :class:`~sklearn.neural_network.MLPClassifier`
          with early stopping (sized to the rows in ``fit``, see ``n_samples``).
        - ``"lightgbm"``: a ``lightgbm.LGBMClassifier`` (needs
          ``pip install skagegender[lightgbm]``).
        - ``"ordinal"``: with two classes an ordinal model is a logistic regression:
          standardisation then :class:`~sklearn.linear_model.LogisticRegression`.
    random_state : int, RandomState instance or None, default=None
        Seed of the model step, where it has one.
    n_samples : int or None, default=None
        Number of training rows, when known (:class:`GenderClassifier` passes it): as
        in :func:`make_age_head`. ``fit`` holds out at least 10 rows (at most half),
        stratified, and trains without early stopping when a class has fewer than 2
        rows.
    **params
        Overrides of the model step's parameters.

    Returns
    -------
    head : Pipeline
        Its final step is named ``"model"``.

    Examples
    --------
    >>> from skagegender.heads import make_gender_head
    >>> make_gender_head("ordinal", C=0.1).get_params()["model__C"]
    0.1
    """
    return _family(family, "make_gender_head").make(
        "gender", random_state=random_state, n_samples=n_samples, **params)
