"""Gender classification from face feature vectors."""

from functools import partial
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, is_classifier
from sklearn.calibration import CalibratedClassifierCV
from sklearn.utils._param_validation import HasMethods, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from ._base import (
    MissingRowsMixin,
    drop_missing_rows,
    predict_present_rows,
    resolve_head,
    validate_for_predict,
)
from ._factory import HEAD_FAMILIES, make_gender_head

__all__ = ["GenderClassifier"]


def _has_proba(estimator):
    head = estimator.head
    return (
        isinstance(head, str)
        or estimator.calibration is not None
        or hasattr(head, "predict_proba")
    )


class GenderClassifier(MissingRowsMixin, ClassifierMixin, BaseEstimator):
    """Gender from face feature vectors, with optional probability calibration.

    ``head`` picks the model, as in :class:`AgeRegressor`: a family name is resolved at
    fit time to :func:`make_gender_head` ``(head, random_state=random_state)``; an
    estimator instance is cloned and fitted, and its parameters are reachable as
    ``head__...`` (``head=make_gender_head("mlp")`` exposes ``head__model__alpha``).

    Labels are kept as given (``"female"``/``"male"``, ``0``/``1``, ``"f"``/``"m"``):
    ``classes_`` is ``np.unique(y)`` and the head is fitted on their indices. More than
    two classes work too.

    Rows of ``X`` containing NaN (no face found upstream) are dropped in :meth:`fit`
    with a warning that counts them. For such rows :meth:`predict_proba` returns NaN
    rows and :meth:`predict` returns ``np.nan``; when any row is missing, the labels
    come back as a float array (numeric classes) or an ``object`` array (string classes)
    so that they can hold it.

    Parameters
    ----------
    head : {"mlp", "lightgbm", "ordinal"} or estimator, default="mlp"
        Head family or an unfitted scikit-learn classifier.
    calibration : {"sigmoid", "isotonic"} or None, default=None
        If set, the head is wrapped in
        :class:`~sklearn.calibration.CalibratedClassifierCV` (5-fold, ensemble of the 5
        calibrated heads) so that predicted probabilities match observed frequencies;
        costs 5 fits instead of 1. ``"isotonic"`` needs a few thousand samples.
    random_state : int, RandomState instance or None, default=None
        Seed given to :func:`make_gender_head` for a family name.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Sorted labels seen in ``fit``.
    head_ : estimator
        The fitted head (a ``CalibratedClassifierCV`` when ``calibration`` is set).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Only when ``X`` has string column names.

    See Also
    --------
    make_gender_head : the family defaults.
    AgeRegressor : the matching age estimator.

    Examples
    --------
    >>> import numpy as np
    >>> from skagegender.heads import GenderClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 6))
    >>> y = np.where(X[:, 0] + 0.3 * rng.normal(size=200) > 0, "male", "female")
    >>> clf = GenderClassifier("ordinal", calibration="sigmoid").fit(X, y)
    >>> clf.classes_.tolist()
    ['female', 'male']
    >>> clf.predict([[2.0, 0, 0, 0, 0, 0]]).tolist()
    ['male']
    >>> clf.predict_proba(X[:3]).shape
    (3, 2)
    """

    _parameter_constraints: ClassVar[dict] = {
        "head": [StrOptions(set(HEAD_FAMILIES)), HasMethods(["fit", "predict"])],
        "calibration": [StrOptions({"sigmoid", "isotonic"}), None],
        "random_state": ["random_state"],
    }

    def __init__(self, head="mlp", *, calibration=None, random_state=None):
        self.head = head
        self.calibration = calibration
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Fit the head.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Face features; rows containing NaN are dropped with a warning.
        y : array-like of shape (n_samples,)
            Gender labels.

        Returns
        -------
        self : GenderClassifier
        """
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan")
        check_classification_targets(y)
        X, y = drop_missing_rows(self, X, y)
        self.classes_, y_encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"GenderClassifier needs at least 2 classes in y; got 1 class: "
                f"{self.classes_[0]!r}."
            )
        head = resolve_head(
            self.head, partial(make_gender_head, n_samples=len(X)), self.random_state)
        if not is_classifier(head):
            raise ValueError(f"GenderClassifier: head must be a classifier; got {head!r}.")
        if self.calibration is not None:
            head = CalibratedClassifierCV(head, method=self.calibration, cv=5)
        self.head_ = head.fit(X, y_encoded)
        return self

    def _proba(self, X):
        # the head saw indices 0..K-1, but a CV fold may have lacked some of them
        proba = np.zeros((X.shape[0], len(self.classes_)))
        proba[:, np.asarray(self.head_.classes_, dtype=int)] = self.head_.predict_proba(X)
        return proba

    def predict(self, X):
        """Predict gender labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,)
            Labels from ``classes_``; ``np.nan`` for rows of ``X`` that contain NaN.
        """
        X = validate_for_predict(self, X)
        return predict_present_rows(
            lambda X: self.classes_[np.asarray(self.head_.predict(X), dtype=int)],
            X,
            dtype=self.classes_.dtype,
        )

    @available_if(_has_proba)
    def predict_proba(self, X):
        """Class probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns follow ``classes_``; NaN rows for rows of ``X`` that contain NaN.
        """
        X = validate_for_predict(self, X)
        return predict_present_rows(self._proba, X, tail_shape=(len(self.classes_),))
