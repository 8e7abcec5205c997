"""Metric functions that are also scorers."""

import functools

__all__ = ["metric_and_scorer"]


def _is_estimator(obj):
    # no array-like that a metric takes as y_true has a predict method
    return callable(getattr(obj, "predict", None))


class _MetricScorer:
    """A higher-is-better metric that also works where scikit-learn wants a scorer.

    ``metric(y_true, y_pred, **kwargs)`` computes the metric;
    ``metric(estimator, X, y, **kwargs)`` (what ``cross_val_score``, ``GridSearchCV``
    and :class:`~skagegender.model_selection.HeadSearchCV` call with ``scoring=metric``)
    scores ``estimator.predict(X)`` against ``y``. The first argument tells the two
    apart: only an estimator has a ``predict`` method.
    """

    def __init__(self, func):
        functools.update_wrapper(self, func)
        self._metric = func

    def __call__(self, *args, **kwargs):
        if args and _is_estimator(args[0]):
            if len(args) != 3:
                raise TypeError(
                    f"{self.__name__}(estimator, X, y) scores an estimator: it takes 3 "
                    f"positional arguments, {len(args)} were given")
            estimator, X, y = args
            return self._metric(y, estimator.predict(X), **kwargs)
        return self._metric(*args, **kwargs)

    def __repr__(self):
        return f"<metric and scorer {self.__module__}.{self.__name__}>"

    def __reduce__(self):
        # pickled by reference to the module-level name (joblib workers, clones)
        return self.__qualname__


def metric_and_scorer(func):
    """Decorator: the higher-is-better metric ``func`` also usable as ``scoring=func``.

    Parameters
    ----------
    func : callable
        ``func(y_true, y_pred, **kwargs) -> float``, higher is better, defined at a
        module's top level under the name it is decorated as.

    Returns
    -------
    metric : callable
        Calls ``func`` as a metric, and as a scorer ``metric(estimator, X, y)``.
    """
    return _MetricScorer(func)
