"""Shared pieces of the dataset loaders: the error type and the returned Bunch."""

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger("skagegender.datasets")

#: The keys every loader's Bunch has, in the column order of ``frame``.
BUNCH_KEYS = ("paths", "age", "gender", "subject", "race", "fold", "age_group")


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder does not have the layout its loader expects.

    Raised by every loader in :mod:`skagegender.datasets` when ``root`` is
    missing, or lacks the label files or image folder of the dataset's
    official release. The message names the expected layout.

    Examples
    --------
    >>> from skagegender.datasets import DatasetLayoutError, load_fgnet
    >>> try:
    ...     load_fgnet("/no/such/folder")
    ... except DatasetLayoutError as exc:
    ...     print("images/" in str(exc))
    True
    """


def _check_root(root, name, layout):
    """Return ``root`` as an absolute Path, or raise DatasetLayoutError."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetLayoutError(
            f"{name}: {str(root)!r} is not a folder. Expected layout: {layout}"
        )
    return root


def _object_array(values):
    """1-D object array (never a 2-D array of characters)."""
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _report_drops(name, dropped):
    """Log how many rows were dropped, by reason; return the total."""
    n_dropped = int(sum(dropped.values()))
    if n_dropped:
        reasons = ", ".join(f"{n} {reason}" for reason, n in dropped.items() if n)
        logger.warning("%s: dropped %d entries (%s)", name, n_dropped, reasons)
    return n_dropped


def _make_bunch(
    *,
    name,
    descr,
    paths,
    age,
    gender,
    dropped,
    subject=None,
    race=None,
    fold=None,
    age_group=None,
    **extra,
):
    """Build the Bunch every loader returns (see ``load_utkface`` for the keys)."""
    from sklearn.utils import Bunch  # imported here: sklearn is slow to import

    paths = [str(p) for p in paths]
    n = len(paths)
    columns = {
        "paths": paths,
        "age": np.asarray(age, dtype=np.float64).reshape(n),
        "gender": _object_array(gender),
        "subject": None if subject is None else _object_array(subject),
        "race": None if race is None else _object_array(race),
        "fold": None if fold is None else np.asarray(fold, dtype=np.int64).reshape(n),
        "age_group": (
            None if age_group is None else np.asarray(age_group, dtype=np.int64).reshape(n)
        ),
    }
    for key, value in columns.items():
        if value is not None and len(value) != n:  # pragma: no cover - internal bug
            raise AssertionError(f"{key} has {len(value)} entries, expected {n}")
    dropped = {reason: int(count) for reason, count in dropped.items()}
    n_dropped = _report_drops(name, dropped)
    return Bunch(
        **columns,
        **extra,
        frame=_make_frame(columns, extra),
        n_dropped=n_dropped,
        dropped=dropped,
        name=name,
        DESCR=descr,
    )


def _make_frame(columns, extra):
    """A pandas DataFrame of the per-image columns, or None without pandas."""
    try:
        import pandas as pd
    except ImportError:
        return None
    data = {"path": columns["paths"]}
    for key in BUNCH_KEYS[1:]:
        if columns[key] is not None:
            data[key] = columns[key]
    for key, value in extra.items():
        if isinstance(value, (list, np.ndarray)) and len(value) == len(columns["paths"]):
            data[key] = value
    return pd.DataFrame(data)


_BUNCH_DOC = """data : :class:`sklearn.utils.Bunch`
        One entry per kept image; every loader returns the same keys:

        - ``paths`` : list of str, length n_images. Absolute image paths.
        - ``age`` : ndarray of shape (n_images,), float64. Age in years, NaN
          where unknown.
        - ``gender`` : ndarray of shape (n_images,), object. ``"female"``,
          ``"male"`` or None (unknown).
        - ``subject`` : ndarray of shape (n_images,), object, or None. The
          person's id (str) where the dataset has one; None for the whole
          dataset when it has none.
        - ``race`` : ndarray of shape (n_images,), object, or None.
        - ``fold`` : ndarray of shape (n_images,), int64, or None. The
          dataset's official fold, where it has one.
        - ``age_group`` : ndarray of shape (n_images,), int64, or None. Index
          of the official age group (Adience only).
        - ``frame`` : pandas.DataFrame or None. The per-image keys above as
          columns (``path`` for ``paths``; keys that are None are left out),
          or None when pandas is not installed.
        - ``n_dropped`` : int. Entries of the release that were left out.
        - ``dropped`` : dict of str to int. ``n_dropped`` by reason.
        - ``name`` : str. The dataset's short name, e.g. ``"utkface"``.
        - ``DESCR`` : str. What the dataset is, its licence, how to cite it."""


def _fill_doc(func):
    """Put the shared description of the returned Bunch into a docstring."""
    func.__doc__ = func.__doc__.replace("%(bunch)s", _BUNCH_DOC)
    return func
