"""Plots of age and gender scores, the scikit-learn way.

Each ``Display`` holds the values it shows; ``from_predictions`` and
``from_estimator`` compute them and call :meth:`plot`, which draws on a given or new
matplotlib axis and keeps ``ax_``, ``figure_`` and the artists. matplotlib is
imported inside ``plot`` (``pip install "skagegender[plot]"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.utils import check_consistent_length
from sklearn.utils._optional_dependencies import check_matplotlib_support

from .._utils import known_labels
from ._age import age_error_report
from ._calibration import _binned_ece, interval_report, reliability_bins

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["AgeErrorDisplay", "GenderReliabilityDisplay", "IntervalCoverageDisplay"]


def _axis(ax):
    """``ax``, or the axis of a new pyplot figure."""
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    return ax


def _gender_outputs(estimator, X):
    """(predicted gender, its probability) of an AgeGenderModel or a classifier."""
    if hasattr(estimator, "predict_details"):  # AgeGenderModel: images in
        details = estimator.predict_details(X)
        return details["gender"], details["gender_probability"]
    proba = np.asarray(estimator.predict_proba(X), dtype=float)
    best = np.nan_to_num(proba, nan=-1).argmax(axis=1)
    return (np.asarray(estimator.classes_, dtype=object)[best],
            proba[np.arange(len(proba)), best])


class AgeErrorDisplay:
    """Age errors: predicted against true age, or the error per age group.

    Build it with :meth:`from_predictions` or :meth:`from_estimator`.

    Parameters
    ----------
    y_true : ndarray of shape (n_samples,)
        True ages.
    y_pred : ndarray of shape (n_samples,)
        Predicted ages, NaN where missing (left out of the scatter and the MAE,
        counted as wrong in one-class-off).

    Attributes
    ----------
    errors_ : list of dict
        :func:`~skagegender.metrics.age_error_report` of the predictions.
    ax_, figure_ : matplotlib Axes and Figure
    artist_ : the scatter (``kind="actual_vs_predicted"``) or the bars (``"per_group"``)

    Examples
    --------
    >>> from skagegender.metrics import AgeErrorDisplay
    >>> display = AgeErrorDisplay.from_predictions(
    ...     [5, 30, 70], [7, 31, 60], kind="per_group")        # doctest: +SKIP
    >>> [row["mae"] for row in display.errors_]                 # doctest: +SKIP
    [4.333333333333333, 2.0, 1.0, 10.0]
    """

    def __init__(self, *, y_true, y_pred):
        self.y_true = y_true
        self.y_pred = y_pred

    def plot(self, ax=None, *, kind="actual_vs_predicted"):
        """Draw on ``ax`` (a new figure when None).

        Parameters
        ----------
        ax : matplotlib Axes, default=None
        kind : {"actual_vs_predicted", "per_group"}, default="actual_vs_predicted"
            A scatter of predicted against true age with the diagonal and a band of
            +-5 years (CS@5), or bars of the MAE per true-age group, labelled with
            their one-class-off accuracy.

        Returns
        -------
        display : AgeErrorDisplay
        """
        check_matplotlib_support(f"{type(self).__name__}.plot")
        if kind not in ("actual_vs_predicted", "per_group"):
            raise ValueError(
                f"kind must be 'actual_vs_predicted' or 'per_group', got {kind!r}")
        ax = _axis(ax)
        y_true = np.asarray(self.y_true, dtype=float)
        y_pred = np.asarray(self.y_pred, dtype=float)
        self.errors_ = age_error_report(y_true, y_pred)
        overall = self.errors_[0]
        if kind == "actual_vs_predicted":
            shown = ~np.isnan(y_pred)
            top = float(max(np.max(y_true), np.nanmax(y_pred, initial=0))) + 5
            self.artist_ = ax.scatter(y_true[shown], y_pred[shown], s=8, alpha=0.5,
                                      label=f"{int(shown.sum())} predictions")
            ax.plot([0, top], [0, top], color="black", linewidth=1, label="predicted = true")
            ax.fill_between([0, top], [-5, top - 5], [5, top + 5], color="gray", alpha=0.15,
                            label="within 5 years")
            ax.set(xlim=(0, top), ylim=(0, top), xlabel="true age (years)",
                   ylabel="predicted age (years)",
                   title=f"MAE {overall['mae']:.2f}, CS@5 {overall['cs5']:.1%}")
            ax.legend(loc="upper left")
        else:
            rows = [r for r in self.errors_ if r["group_type"] == "age_group"]
            labels = [r["group"] for r in rows]
            self.artist_ = ax.bar(labels, [r["mae"] for r in rows], color="tab:blue")
            for bar, row in zip(self.artist_, rows):
                ax.annotate(f"{row['one_class_off']:.0%}\nn={row['n']}",
                            (bar.get_x() + bar.get_width() / 2, np.nan_to_num(bar.get_height())),
                            ha="center", va="bottom", fontsize=8)
            ax.set(xlabel="true age group", ylabel="MAE (years)",
                   title="MAE per age group (labels: one-class-off, n)")
            ax.margins(y=0.2)
        self.ax_, self.figure_ = ax, ax.figure
        return self

    @classmethod
    def from_predictions(cls, y_true: ArrayLike, y_pred: ArrayLike, *,
                         kind: str = "actual_vs_predicted",
                         ax: Axes | None = None) -> AgeErrorDisplay:
        """Plot the errors of predicted ages.

        Parameters
        ----------
        y_true : array-like of shape (n_samples,)
        y_pred : array-like of shape (n_samples,)
            NaN where missing.
        kind : {"actual_vs_predicted", "per_group"}, default="actual_vs_predicted"
        ax : matplotlib Axes, default=None

        Returns
        -------
        display : AgeErrorDisplay
        """
        y_true = np.asarray(y_true, dtype=float).ravel()
        y_pred = np.asarray(y_pred, dtype=float).ravel()
        check_consistent_length(y_true, y_pred)
        return cls(y_true=y_true, y_pred=y_pred).plot(ax=ax, kind=kind)

    @classmethod
    def from_estimator(cls, estimator: Any, X: Any, y: ArrayLike, *,
                       kind: str = "actual_vs_predicted",
                       ax: Axes | None = None) -> AgeErrorDisplay:
        """Plot the errors of ``estimator.predict(X)`` against ``y``.

        Parameters
        ----------
        estimator : fitted age estimator (an AgeGenderModel, a head, a Pipeline)
        X : images or feature rows, as ``estimator.predict`` takes them
        y : array-like of shape (n_samples,)
            True ages.
        kind : {"actual_vs_predicted", "per_group"}, default="actual_vs_predicted"
        ax : matplotlib Axes, default=None

        Returns
        -------
        display : AgeErrorDisplay
        """
        return cls.from_predictions(y, estimator.predict(X), kind=kind, ax=ax)


class IntervalCoverageDisplay:
    """How often the age interval holds the true age, per true-age group.

    Parameters
    ----------
    groups : list of str
        ``"all"``, then the age groups with samples.
    coverage, mean_width : ndarray of shape (n_groups,)
    n : ndarray of shape (n_groups,)
    nominal : float or None
        The coverage the intervals were made for (a line on the plot).

    Attributes
    ----------
    ax_, figure_ : matplotlib Axes and Figure
    bars_ : the coverage bars
    line_ : the nominal coverage line (None without ``nominal``)
    """

    def __init__(self, *, groups, coverage, mean_width, n, nominal=None):
        self.groups = groups
        self.coverage = coverage
        self.mean_width = mean_width
        self.n = n
        self.nominal = nominal

    def plot(self, ax=None):
        """Draw on ``ax`` (a new figure when None).

        Returns
        -------
        display : IntervalCoverageDisplay
        """
        check_matplotlib_support(f"{type(self).__name__}.plot")
        ax = _axis(ax)
        self.bars_ = ax.bar(self.groups, np.nan_to_num(self.coverage), color="tab:green")
        for bar, width, n in zip(self.bars_, self.mean_width, self.n):
            ax.annotate(f"{width:.1f} y\nn={n}", (bar.get_x() + bar.get_width() / 2,
                                                    bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        self.line_ = None
        if self.nominal is not None:
            self.line_ = ax.axhline(self.nominal, color="black", linestyle="--",
                                    label=f"asked for {self.nominal:.0%}")
            ax.legend(loc="lower right")
        ax.set(ylim=(0, 1.15), xlabel="true age group", ylabel="coverage",
               title="Age interval coverage (labels: mean width, n)")
        self.ax_, self.figure_ = ax, ax.figure
        return self

    @classmethod
    def from_predictions(cls, y_true: ArrayLike, intervals: ArrayLike, *,
                         coverage: float | None = None,
                         ax: Axes | None = None) -> IntervalCoverageDisplay:
        """Plot the coverage of age intervals.

        Parameters
        ----------
        y_true : array-like of shape (n_samples,)
        intervals : array-like of shape (n_samples, 2)
            Lower and upper ages, NaN where missing (counted as not covering).
        coverage : float or None, default=None
            The nominal coverage of the intervals, drawn as a line.
        ax : matplotlib Axes, default=None

        Returns
        -------
        display : IntervalCoverageDisplay
        """
        rows = [r for r in interval_report(y_true, intervals)
                if r["group_type"] in ("all", "age_group")]
        return cls(groups=[r["group"] for r in rows],
                   coverage=np.array([r["coverage"] for r in rows]),
                   mean_width=np.array([r["mean_width"] for r in rows]),
                   n=np.array([r["n"] for r in rows]), nominal=coverage).plot(ax=ax)

    @classmethod
    def from_estimator(cls, estimator: Any, X: Any, y: ArrayLike, *, coverage: float = 0.8,
                       ax: Axes | None = None) -> IntervalCoverageDisplay:
        """Plot the coverage of ``estimator``'s age intervals on ``X``.

        Parameters
        ----------
        estimator : AgeGenderModel (images in) or an age head with ``predict_interval``
        X : images or feature rows
        y : array-like of shape (n_samples,)
        coverage : float in (0, 1), default=0.8
        ax : matplotlib Axes, default=None

        Returns
        -------
        display : IntervalCoverageDisplay
        """
        if hasattr(estimator, "predict_interval"):
            intervals = estimator.predict_interval(X, coverage=coverage)
        elif hasattr(estimator, "predict_details"):
            intervals = estimator.predict_details(X, coverage=coverage)["age_interval"]
        else:
            raise TypeError(f"{type(estimator).__name__} gives no age intervals "
                            "(it has neither predict_interval nor predict_details)")
        return cls.from_predictions(y, intervals, coverage=coverage, ax=ax)


class GenderReliabilityDisplay:
    """Reliability diagram of the predicted gender's probability.

    Predictions are binned by the probability given to the predicted gender; each
    bin's accuracy is drawn against its mean probability. A calibrated model lies on
    the diagonal.

    Parameters
    ----------
    mean_confidence, accuracy : ndarray of shape (n_bins,)
        NaN for empty bins.
    count : ndarray of shape (n_bins,)
    ece : float
        Expected calibration error of the same bins.

    Attributes
    ----------
    ax_, figure_ : matplotlib Axes and Figure
    line_ : the reliability curve
    """

    def __init__(self, *, mean_confidence, accuracy, count, ece):
        self.mean_confidence = mean_confidence
        self.accuracy = accuracy
        self.count = count
        self.ece = ece

    def plot(self, ax=None):
        """Draw on ``ax`` (a new figure when None).

        Returns
        -------
        display : GenderReliabilityDisplay
        """
        check_matplotlib_support(f"{type(self).__name__}.plot")
        ax = _axis(ax)
        used = self.count > 0
        ax.plot([0, 1], [0, 1], color="black", linestyle="--", label="calibrated")
        (self.line_,) = ax.plot(self.mean_confidence[used], self.accuracy[used], marker="o",
                                color="tab:purple", label=f"model (ECE {self.ece:.3f})")
        ax.set(xlim=(0.45, 1.02), ylim=(0, 1.02), xlabel="probability of the predicted gender",
               ylabel="fraction right", title="Gender reliability")
        ax.legend(loc="upper left")
        self.ax_, self.figure_ = ax, ax.figure
        return self

    @classmethod
    def from_predictions(cls, y_true: ArrayLike, y_pred: ArrayLike, y_proba: ArrayLike, *,
                         n_bins: int = 10, ax: Axes | None = None) -> GenderReliabilityDisplay:
        """Plot the reliability of predicted genders.

        Parameters
        ----------
        y_true : array-like of shape (n_samples,)
            True genders; None, "" or NaN where unknown (left out).
        y_pred : array-like of shape (n_samples,)
            Predicted genders, None where missing (left out).
        y_proba : array-like of shape (n_samples,)
            Probability of the predicted gender (``gender_probability`` of
            :meth:`~skagegender.model.AgeGenderModel.predict_details`).
        n_bins : int, default=10
        ax : matplotlib Axes, default=None

        Returns
        -------
        display : GenderReliabilityDisplay
        """
        y_true = np.asarray(y_true, dtype=object)
        y_pred = np.asarray(y_pred, dtype=object)
        y_proba = np.asarray(y_proba, dtype=float)
        check_consistent_length(y_true, y_pred, y_proba)
        used = known_labels(y_true) & known_labels(y_pred) & ~np.isnan(y_proba)
        if not used.any():
            raise ValueError("no sample has a true gender, a predicted gender and a probability")
        correct = np.array([str(t) == str(p) for t, p in zip(y_true[used], y_pred[used])])
        bins = reliability_bins(correct, y_proba[used], n_bins=n_bins)
        count, accuracy, confidence = bins
        return cls(mean_confidence=confidence, accuracy=accuracy, count=count,
                   ece=_binned_ece(*bins)).plot(ax=ax)

    @classmethod
    def from_estimator(cls, estimator: Any, X: Any, y: ArrayLike, *, n_bins: int = 10,
                       ax: Axes | None = None) -> GenderReliabilityDisplay:
        """Plot the reliability of ``estimator``'s genders on ``X``.

        Parameters
        ----------
        estimator : AgeGenderModel (images in) or a classifier with ``predict_proba``
        X : images or feature rows
        y : array-like of shape (n_samples,)
            True genders.
        n_bins : int, default=10
        ax : matplotlib Axes, default=None

        Returns
        -------
        display : GenderReliabilityDisplay
        """
        pred, proba = _gender_outputs(estimator, X)
        return cls.from_predictions(y, pred, proba, n_bins=n_bins, ax=ax)
