"""IMDB-WIKI loader: one MATLAB struct per source."""

import numpy as np

from ._base import DatasetLayoutError, _check_root, _fill_doc, _make_bunch

_SOURCES = ("imdb", "wiki")
_FIELDS = ("dob", "photo_taken", "full_path", "gender", "face_score", "second_face_score")
_LAYOUT = (
    "root/imdb_crop/imdb.mat or root/wiki_crop/wiki.mat (a MATLAB struct named imdb / wiki "
    "with fields dob, photo_taken, full_path, gender, face_score, second_face_score) and "
    "the images at root/<source>_crop/<full_path>"
)
_DESCR = """IMDB-WIKI ({source})
================

Face crops of celebrities from IMDb (460,723) and Wikipedia (62,328), labeled
automatically: age = photo year - birth date, gender from the profile. Many
labels are noisy; the loader keeps faces whose detection score is at least
``min_face_score``, with no second face, and an age in 0-100. Research use
only. Rothe, Timofte & Van Gool, "DEX: Deep EXpectation of apparent age from a
single image", ICCV Workshops 2015; IJCV 2018.
"""


def _matlab_datenum_to_ymd(dob):
    """Years, months, days of MATLAB serial date numbers; NaN-safe.

    MATLAB day 1 is 0000-01-01 and Python's ordinal 1 is 0001-01-01, so the
    date is ``datetime.fromordinal(int(dob)) - timedelta(days=366)``; this
    vectorised form gives the same calendar (proleptic Gregorian).
    """
    dob = np.asarray(dob, dtype=np.float64)
    valid = np.isfinite(dob) & (dob >= 367) & (dob < 3_000_000)
    days = np.where(valid, np.floor(dob), 367).astype(np.int64) - 367
    dates = np.datetime64("0001-01-01", "D") + days
    years = dates.astype("datetime64[Y]").astype(np.int64) + 1970
    months = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day = (dates - dates.astype("datetime64[M]")).astype(np.int64) + 1
    return years, months, day, valid


def _strings(cell):
    """A MATLAB cell array of strings (as loaded by scipy.io) -> list of str."""
    out = []
    for item in np.ravel(cell):
        item = np.ravel(item)
        out.append(str(item[0]) if item.size else "")
    return out


@_fill_doc
def load_imdb_wiki(
    root,
    source="imdb",
    *,
    min_face_score=1.0,
    max_second_face_score=None,
    require_images=True,
):
    """Load IMDB-WIKI from the official ``imdb_crop`` / ``wiki_crop`` release.

    The age convention is the dataset authors': the photo's date is unknown
    beyond its year, so the age is the number of full years between the
    date of birth (``dob``, a MATLAB serial date number) and 1 July of
    ``photo_taken``. This is ``photo_taken - birth year``, minus one for
    people born after 1 July.

    Entries are dropped, and counted in ``dropped`` under the first reason
    that applies, in this order:

    - ``"no_face"``: ``face_score`` is not finite (``-inf`` when no face was
      found) or below ``min_face_score``;
    - ``"second_face"``: a second face was found (``second_face_score`` not
      NaN), or, when ``max_second_face_score`` is given, its score is above
      that;
    - ``"bad_age"``: the date of birth is unusable or the age is outside
      0-100;
    - ``"missing_image"``: with ``require_images=True``, the file is missing.

    Parameters
    ----------
    root : str or path-like
        The folder holding ``imdb_crop/`` and/or ``wiki_crop/``.
    source : {"imdb", "wiki"}, default="imdb"
        Which half to load.
    min_face_score : float, default=1.0
        Lowest face-detection score kept.
    max_second_face_score : float or None, default=None
        None drops every image with a second face; a number keeps images
        whose second face scored at most this.
    require_images : bool, default=True
        Whether each image file must exist. With False, only the ``.mat``
        file is read.

    Returns
    -------
    %(bunch)s

        For IMDB-WIKI: ``age`` is an integer number of years (as float),
        ``gender`` maps 1 to ``"male"``, 0 to ``"female"`` and NaN to None,
        ``subject`` is the person id at the start of the file name (the IMDb
        ``nm`` id, or the Wikipedia id); ``race``, ``fold`` and
        ``age_group`` are None.

    Raises
    ------
    DatasetLayoutError
        If the ``.mat`` file is missing or is not the official struct.
    ValueError
        If ``source`` is not ``"imdb"`` or ``"wiki"``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np, scipy.io
    >>> from skagegender.datasets import load_imdb_wiki
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "wiki_crop").mkdir()
    >>> cells = lambda *s: np.array([list(s)], dtype=object)
    >>> scipy.io.savemat(root / "wiki_crop" / "wiki.mat", {"wiki": {
    ...     "dob": np.array([[723671.0, 703186.0]]),         # 1981-05-05, 1925-04-04
    ...     "photo_taken": np.array([[2009, 1968]]),
    ...     "full_path": cells("17/10000217_1981-05-05_2009.jpg",
    ...                        "48/10000548_1925-04-04_1964.jpg"),
    ...     "gender": np.array([[1.0, np.nan]]),
    ...     "face_score": np.array([[4.3, -np.inf]]),
    ...     "second_face_score": np.array([[np.nan, np.nan]]),
    ...     "name": cells("Sami Jauhojärvi", "Dettmar Cramer"),
    ... }})
    >>> data = load_imdb_wiki(root, "wiki", require_images=False)
    >>> data.age, data.gender, data.subject, data.dropped["no_face"]
    (array([28.]), array(['male'], dtype=object), array(['10000217'], dtype=object), 1)
    """
    if source not in _SOURCES:
        raise ValueError(f"source must be one of {_SOURCES}, got {source!r}")
    import scipy.io

    root = _check_root(root, "IMDB-WIKI", _LAYOUT)
    folder = root / f"{source}_crop"
    mat_path = folder / f"{source}.mat"
    if not mat_path.is_file():
        raise DatasetLayoutError(
            f"IMDB-WIKI: {str(mat_path)!r} is missing. Expected layout: {_LAYOUT}"
        )
    mat = scipy.io.loadmat(mat_path)
    try:
        struct = mat[source][0, 0]
        fields = {name: struct[name] for name in _FIELDS}
    except (KeyError, IndexError, ValueError) as exc:
        raise DatasetLayoutError(
            f"IMDB-WIKI: {str(mat_path)!r} does not hold the official struct {source!r} "
            f"({exc!r}). Expected layout: {_LAYOUT}"
        ) from None
    full_path = _strings(fields["full_path"])
    n = len(full_path)
    numeric = {}
    for name in ("dob", "photo_taken", "gender", "face_score", "second_face_score"):
        numeric[name] = np.asarray(fields[name], dtype=np.float64).ravel()
        if numeric[name].shape != (n,):
            raise DatasetLayoutError(
                f"IMDB-WIKI: field {name!r} of {str(mat_path)!r} has "
                f"{numeric[name].size} entries, full_path has {n}. Expected layout: {_LAYOUT}"
            )

    face = numeric["face_score"]
    second = numeric["second_face_score"]
    year, month, day, dob_ok = _matlab_datenum_to_ymd(numeric["dob"])
    taken = numeric["photo_taken"]
    born_after_july_1 = (month > 7) | ((month == 7) & (day > 1))
    with np.errstate(invalid="ignore"):
        age = taken - year - born_after_july_1
        has_face = np.isfinite(face) & (face >= min_face_score)
        if max_second_face_score is None:
            one_face = np.isnan(second)
        else:
            one_face = np.isnan(second) | (second <= max_second_face_score)
        age_ok = dob_ok & np.isfinite(taken) & (age >= 0) & (age <= 100)

    keep = np.ones(n, dtype=bool)
    dropped = {}
    for reason, ok in (("no_face", has_face), ("second_face", one_face), ("bad_age", age_ok)):
        dropped[reason] = int(np.count_nonzero(keep & ~ok))
        keep &= ok
    paths = [folder / full_path[i] for i in np.flatnonzero(keep)]
    if require_images:
        exists = np.array([p.is_file() for p in paths], dtype=bool)
        dropped["missing_image"] = int(np.count_nonzero(~exists))
        keep[np.flatnonzero(keep)[~exists]] = False
        paths = [p for p, e in zip(paths, exists) if e]
    index = np.flatnonzero(keep)
    gender = numeric["gender"][index]
    return _make_bunch(
        name=source,
        descr=_DESCR.format(source=source),
        paths=paths,
        age=age[index],
        gender=[None if np.isnan(g) else ("male" if g == 1 else "female") for g in gender],
        subject=[full_path[i].rsplit("/", 1)[-1].split("_", 1)[0] for i in index],
        dropped=dropped,
    )
