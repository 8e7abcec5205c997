"""Default estimators for each head family.

Every factory returns a :class:`~sklearn.pipeline.Pipeline` whose final step is named
``"model"``, so a family's hyperparameters are always reached as ``model__<param>``
(``head__model__alpha`` from :class:`AgeRegressor`).
"""

from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ._ordinal import OrdinalLogisticRegression

__all__ = ["AGE_HEADS", "GENDER_HEADS", "make_age_head", "make_gender_head"]

AGE_HEADS = ("mlp", "lightgbm", "ordinal")
GENDER_HEADS = ("mlp", "lightgbm", "ordinal")


def _import_lightgbm():
    try:
        import lightgbm
    except ImportError as exc:
        raise ImportError(
            "The 'lightgbm' head needs the lightgbm package: "
            "pip install skagegender[lightgbm]"
        ) from exc
    return lightgbm


def _check_family(family, families, factory):
    if family not in families:
        raise ValueError(f"{factory}: unknown head family {family!r}; expected one of {families}.")


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

    A fixed batch of 256 made scikit-learn warn on every fit of fewer rows. Training
    stops when the held-out score has not improved by ``tol`` for 5 epochs, and keeps
    the best epoch's weights, so small and large fits converge well inside ``max_iter``
    instead of stopping at a fixed 30 epochs with a ``ConvergenceWarning``.
    """
    return dict(
        batch_size=_batch_size(n_samples),
        early_stopping=True,
        validation_fraction=_validation_fraction(n_samples),
        n_iter_no_change=5,
        tol=1e-3,
        max_iter=200,
    )


def make_age_head(family="mlp", *, random_state=None, n_samples=None, **params):
    """Build the default unfitted age estimator of a head family.

    Parameters
    ----------
    family : {"mlp", "lightgbm", "ordinal"}, default="mlp"
        - ``"mlp"``: standardisation then an
          :class:`~sklearn.neural_network.MLPRegressor`. A label-distribution
          ``MLPClassifier`` (softmax over integer ages) with the same size and epochs
          did about twice worse on MAE on the generated stand-in of
          ``benchmarks/heads_cv.py`` (10.2 vs 5.2 years, 2,000 samples); pass one as
          ``head`` to get :meth:`AgeRegressor.predict_distribution`.
        - ``"lightgbm"``: a ``lightgbm.LGBMRegressor`` (needs
          ``pip install skagegender[lightgbm]``).
        - ``"ordinal"``: :class:`OrdinalLogisticRegression` over integer ages.
    random_state : int, RandomState instance or None, default=None
        Seed of the model step, where it has one.
    n_samples : int or None, default=None
        Number of training rows, when known (:class:`AgeRegressor` passes it). The
        ``"mlp"`` family's early stopping then holds out at least 10 of them.
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
    _check_family(family, AGE_HEADS, "make_age_head")
    if family == "mlp":
        model = MLPRegressor(
            hidden_layer_sizes=(256,),
            alpha=1e-2,
            learning_rate_init=2e-3,
            random_state=random_state,
            **_mlp_params(n_samples),
        )
        steps = [("scale", StandardScaler()), ("model", model)]
    elif family == "lightgbm":
        lightgbm = _import_lightgbm()
        model = lightgbm.LGBMRegressor(
            n_estimators=300,
            learning_rate=0.05,
            num_leaves=31,
            colsample_bytree=0.3,
            random_state=random_state,
            verbose=-1,
        )
        steps = [("model", model)]
    else:
        steps = [("model", OrdinalLogisticRegression(alpha=10.0))]
    head = Pipeline(steps)
    head.set_params(**{f"model__{key}": value for key, value in params.items()})
    return head


def make_gender_head(family="mlp", *, random_state=None, n_samples=None, **params):
    """Build the default unfitted gender estimator of a head family.

    Parameters
    ----------
    family : {"mlp", "lightgbm", "ordinal"}, default="mlp"
        - ``"mlp"``: standardisation then an :class:`~sklearn.neural_network.MLPClassifier`.
        - ``"lightgbm"``: a ``lightgbm.LGBMClassifier`` (needs
          ``pip install skagegender[lightgbm]``).
        - ``"ordinal"``: with two classes an ordinal model is a logistic regression:
          standardisation then :class:`~sklearn.linear_model.LogisticRegression`.
    random_state : int, RandomState instance or None, default=None
        Seed of the model step, where it has one.
    n_samples : int or None, default=None
        Number of training rows, when known (:class:`GenderClassifier` passes it). The
        ``"mlp"`` family's early stopping then holds out at least 10 of them, so that
        even a fit of 10 rows gets a split that holds every class.
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
    _check_family(family, GENDER_HEADS, "make_gender_head")
    if family == "mlp":
        model = MLPClassifier(
            hidden_layer_sizes=(128,),
            alpha=1e-2,
            random_state=random_state,
            **_mlp_params(n_samples),
        )
        steps = [("scale", StandardScaler()), ("model", model)]
    elif family == "lightgbm":
        lightgbm = _import_lightgbm()
        model = lightgbm.LGBMClassifier(
            n_estimators=200,
            learning_rate=0.05,
            num_leaves=31,
            colsample_bytree=0.3,
            random_state=random_state,
            verbose=-1,
        )
        steps = [("model", model)]
    else:
        model = LogisticRegression(C=0.05, max_iter=1000)
        steps = [("scale", StandardScaler()), ("model", model)]
    head = Pipeline(steps)
    head.set_params(**{f"model__{key}": value for key, value in params.items()})
    return head
