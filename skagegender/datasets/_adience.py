"""Adience loader: five tab-separated fold files and a faces/ folder."""

import csv
import re

import numpy as np

from .._utils import ADIENCE_AGE_GROUPS
from ._base import DatasetLayoutError, _check_root, _fill_doc, _make_bunch

_N_FOLDS = 5
_RANGE = re.compile(r"^\(\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*\)$")
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
_GENDERS = {"f": "female", "m": "male"}
_LAYOUT = (
    "root/fold_0_data.txt .. root/fold_4_data.txt (tab-separated, header user_id, "
    "original_image, face_id, age, gender, ...) and images at "
    "root/faces/<user_id>/coarse_tilt_aligned_face.<face_id>.<original_image>"
)
_DESCR = """Adience benchmark (age and gender)
==================================

26,580 Flickr photos of 2,284 subjects, unconstrained, with an age group (one
of 8: 0-2, 4-6, 8-13, 15-20, 25-32, 38-43, 48-53, 60-100) and a gender per
face. Five official subject-exclusive folds, listed in fold_0_data.txt ..
fold_4_data.txt. ``age`` is the midpoint of the official group; ages written
off the grid in the fold files are mapped as described in ``load_adience``.
Research use only. Eidinger, Enbar & Hassner, "Age and Gender Estimation of
Unfiltered Faces", IEEE TIFS 2014.
"""


def adience_age_group(value):
    """Map an age as written in the Adience fold files to an official group.

    The value's centre (a single number, or the midpoint of a written
    ``(low, high)`` range) goes to the official group that contains it; a
    centre between two groups goes to the group whose bounds are nearest,
    and an exact tie goes to the younger group. So ``"(8, 12)"`` -> 8-13,
    ``"(38, 48)"`` (centre 43) -> 38-43, ``"35"`` (tie between 32 and 38) ->
    25-32, ``"57"`` -> 60-100.

    Parameters
    ----------
    value : str
        The ``age`` field of a fold file, e.g. ``"(25, 32)"`` or ``"35"``.

    Returns
    -------
    group : int or None
        Index into :data:`ADIENCE_AGE_GROUPS`, or None when ``value`` is not
        an age (``"None"``, empty, anything else).

    Examples
    --------
    >>> from skagegender.datasets import adience_age_group
    >>> [adience_age_group(v) for v in ["(25, 32)", "(8, 12)", "3", "57", "None"]]
    [4, 2, 0, 7, None]
    """
    value = value.strip()
    match = _RANGE.match(value)
    if match:
        centre = (float(match[1]) + float(match[2])) / 2
    elif _NUMBER.match(value):
        centre = float(value)
    else:
        return None
    distances = [max(low - centre, 0.0, centre - high) for low, high in ADIENCE_AGE_GROUPS]
    return int(np.argmin(distances))  # argmin keeps the first (younger) group on a tie


@_fill_doc
def load_adience(root, *, require_images=True):
    """Load the Adience benchmark from its official fold files.

    Rows whose age is not usable (``None``, empty, or a row cut short in the
    file) are dropped and counted (``dropped["no_age"]``). With
    ``require_images=True``, rows whose image file is missing are dropped too
    (``dropped["missing_image"]``).

    Parameters
    ----------
    root : str or path-like
        The folder holding ``fold_0_data.txt`` .. ``fold_4_data.txt`` and
        ``faces/<user_id>/coarse_tilt_aligned_face.<face_id>.<original_image>``.
    require_images : bool, default=True
        Whether the ``faces/`` folder must exist and each image be present.
        With False, only the fold files are read and the paths are where the
        images would be (useful for label statistics without the images).

    Returns
    -------
    %(bunch)s

        For Adience: ``age_group`` is the index into
        :data:`ADIENCE_AGE_GROUPS` (see :func:`adience_age_group`), ``age``
        is that group's midpoint (``(low + high) / 2``, e.g. 28.5 for 25-32,
        80 for 60-100), ``gender`` maps ``f``/``m`` and leaves ``u`` or empty
        as None, ``fold`` is the fold file's index 0-4 and ``subject`` the
        Flickr ``user_id``; ``race`` is None.

    Raises
    ------
    DatasetLayoutError
        If a fold file is missing or lacks the official columns, or (with
        ``require_images=True``) ``root/faces`` is missing.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from skagegender.datasets import load_adience
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> header = "user_id\\toriginal_image\\tface_id\\tage\\tgender\\n"
    >>> for k in range(5):
    ...     row = f"u{k}@N01\\t{k}_o.jpg\\t{k}\\t(25, 32)\\tf\\n"
    ...     _ = (root / f"fold_{k}_data.txt").write_text(header + row)
    >>> data = load_adience(root, require_images=False)
    >>> data.fold, data.age_group, data.age
    (array([0, 1, 2, 3, 4]), array([4, 4, 4, 4, 4]), array([28.5, 28.5, 28.5, 28.5, 28.5]))
    """
    root = _check_root(root, "Adience", _LAYOUT)
    faces = root / "faces"
    if require_images and not faces.is_dir():
        raise DatasetLayoutError(
            f"Adience: no 'faces' folder in {str(root)!r} (pass require_images=False to read "
            f"the labels alone). Expected layout: {_LAYOUT}"
        )
    midpoints = [(low + high) / 2 for low, high in ADIENCE_AGE_GROUPS]
    paths, groups, genders, folds, subjects = [], [], [], [], []
    dropped = {"no_age": 0, **({"missing_image": 0} if require_images else {})}
    for fold in range(_N_FOLDS):
        for row in _read_fold_file(root / f"fold_{fold}_data.txt"):
            group = adience_age_group(row.get("age") or "")
            if group is None or not row.get("original_image") or not row.get("face_id"):
                dropped["no_age"] += 1
                continue
            user = row["user_id"]
            image = f"coarse_tilt_aligned_face.{row['face_id']}.{row['original_image']}"
            path = faces / user / image
            if require_images and not path.is_file():
                dropped["missing_image"] += 1
                continue
            paths.append(path)
            groups.append(group)
            genders.append(_GENDERS.get((row.get("gender") or "").strip().lower()))
            folds.append(fold)
            subjects.append(user)
    return _make_bunch(
        name="adience",
        descr=_DESCR,
        paths=paths,
        age=[midpoints[g] for g in groups],
        gender=genders,
        subject=subjects,
        fold=folds,
        age_group=groups,
        dropped=dropped,
    )


def _read_fold_file(path):
    """Rows of one fold file as dicts (short rows lack the missing keys)."""
    if not path.is_file():
        raise DatasetLayoutError(f"Adience: {str(path)!r} is missing. Expected layout: {_LAYOUT}")
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.reader(file, delimiter="\t")
        header = [name.strip() for name in next(reader, [])]
        required = ("user_id", "original_image", "face_id", "age", "gender")
        missing = [name for name in required if name not in header]
        if missing:
            raise DatasetLayoutError(
                f"Adience: {str(path)!r} lacks the columns {missing}. Expected layout: {_LAYOUT}"
            )
        rows = []
        for fields in reader:
            if fields:
                rows.append({k: v.strip() for k, v in zip(header, fields)})
        return rows
