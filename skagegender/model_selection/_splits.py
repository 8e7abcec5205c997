"""Cross-validation that keeps each person on one side, per dataset protocol."""

from numbers import Integral

import numpy as np

__all__ = ["dataset_cv"]


def dataset_cv(data, n_splits=5, *, random_state=None):
    """The standard cross-validation splitter for a loaded dataset, and its groups.

    The same person on both sides of a split makes age errors look far
    smaller than they are (about half on MORPH-II), so the splitter follows
    the dataset's protocol and keeps each subject on one side wherever the
    dataset has subject ids:

    ========================  ==========================================  ==========
    dataset has               splitter                                    n_splits
    ========================  ==========================================  ==========
    official folds (Adience)  ``PredefinedSplit(data.fold)``              the folds
    FG-NET                    ``LeaveOneGroupOut()`` on ``data.subject``  1 per person
    subject ids (MORPH-II,    ``GroupKFold(n_splits, shuffle=True)`` on   n_splits
    IMDB-WIKI)                ``data.subject``
    no subject ids (UTKFace)  ``KFold(n_splits, shuffle=True)``           n_splits
    ========================  ==========================================  ==========

    Splits are shuffled because loaders return files in name order, which
    for UTKFace is age order. For UTKFace a person may appear on both sides
    (it has no subject ids); say so when reporting its results.

    Parameters
    ----------
    data : :class:`sklearn.utils.Bunch`
        As returned by a :mod:`skagegender.datasets` loader; only ``name``,
        ``fold`` and ``subject`` are read. To split a subset of the images,
        pass a Bunch with those three keys indexed the same way.
    n_splits : int, default=5
        Number of folds where the protocol does not fix it.
    random_state : int, RandomState instance or None, default=None
        Seeds the shuffling of ``KFold`` / ``GroupKFold``.

    Returns
    -------
    cv : cross-validation splitter
        A scikit-learn splitter with ``split(X, y, groups)``.
    groups : ndarray of shape (n_images,), object, or None
        ``data.subject`` when the splitter uses groups: pass it as ``groups``
        to ``cross_validate``, ``GridSearchCV.fit`` or ``HeadSearchCV.fit``.
        None for official folds (checked to keep subjects apart) and when
        the dataset has no subject ids.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.utils import Bunch
    >>> from skagegender.model_selection import dataset_cv
    >>> data = Bunch(name="morph2", fold=None, subject=np.array(list("aabbccdd"), dtype=object))
    >>> cv, groups = dataset_cv(data, n_splits=4, random_state=0)
    >>> type(cv).__name__
    'GroupKFold'
    >>> X = np.zeros((8, 1))
    >>> all(set(groups[tr]).isdisjoint(groups[te]) for tr, te in cv.split(X, groups=groups))
    True
    """
    from sklearn.model_selection import (
        GroupKFold,
        KFold,
        LeaveOneGroupOut,
        PredefinedSplit,
    )

    if not isinstance(n_splits, Integral) or n_splits < 2:
        raise ValueError(f"n_splits must be an integer >= 2, got {n_splits!r}")
    name = getattr(data, "name", None)
    fold = getattr(data, "fold", None)
    subject = getattr(data, "subject", None)
    groups = None if subject is None else np.asarray(subject, dtype=object)
    if fold is not None:
        fold = np.asarray(fold)
        if groups is not None:
            _check_folds_keep_subjects_apart(fold, groups)
        return PredefinedSplit(fold), None  # PredefinedSplit warns when given groups
    if groups is None:
        if name == "fgnet":
            raise ValueError("FG-NET's protocol (leave one person out) needs data.subject")
        return KFold(n_splits, shuffle=True, random_state=random_state), None
    if name == "fgnet":
        return LeaveOneGroupOut(), groups
    return GroupKFold(n_splits, shuffle=True, random_state=random_state), groups


def _check_folds_keep_subjects_apart(fold, groups):
    """Raise if a subject is in more than one predefined fold."""
    first_fold = {}
    for f, g in zip(fold.tolist(), groups.tolist()):
        if first_fold.setdefault(g, f) != f:
            raise ValueError(
                f"subject {g!r} is in folds {first_fold[g]} and {f}: the predefined folds "
                "would put one person on both sides of a split"
            )
