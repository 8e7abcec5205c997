"""FG-NET loader: subject and age are in the file names."""

import os
import re

from ._base import DatasetLayoutError, _check_root, _fill_doc, _make_bunch

# SSSAaa[x].JPG: subject SSS, age aa, optional a/b for a second photo at that age.
_NAME = re.compile(r"^(?P<subject>\d{3})A(?P<age>\d{2})(?P<suffix>[a-z]?)\.jpe?g$", re.IGNORECASE)
_LAYOUT = "root/images/SSSAaa[x].JPG (subject SSS, age aa) and optionally root/points/SSSaaa[x].pts"
_DESCR = """FG-NET Aging Database
=====================

1,002 scanned photos of 82 subjects aged 0-69, many of them children, in the
wild, some grayscale, not aligned, each with 68 manual landmarks
(``points/*.pts``). File names ``SSSAaa[x].JPG``: subject SSS, age aa, an
optional letter for a second photo at the same age. No gender labels. The
standard protocol is leave-one-person-out. Research use; cite Chen et al.,
CVPR 2013 and Fu et al., ECCV 2014 when publishing.
"""


@_fill_doc
def load_fgnet(root):
    """Load FG-NET from its official ``images/`` and ``points/`` folders.

    Image file names are matched case-insensitively (``001A02.JPG`` and
    ``001a02.jpg`` both work). Files in ``images/`` with an image extension
    that do not follow ``SSSAaa[x]`` are dropped and counted
    (``dropped["malformed_name"]``).

    Parameters
    ----------
    root : str or path-like
        The folder holding ``images/`` (and, optionally, ``points/``).

    Returns
    -------
    %(bunch)s

        For FG-NET: ``gender`` is all None (FG-NET has no gender labels),
        ``subject`` holds the three-digit subject id (``"001"``), ``race``,
        ``fold`` and ``age_group`` are None. One extra key:

        - ``landmarks_path`` : list of (str or None), length n_images. The
          image's 68-point ``.pts`` file, None where it is missing.

    Raises
    ------
    DatasetLayoutError
        If ``root/images`` is missing or holds no FG-NET image.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from skagegender.datasets import load_fgnet
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "images").mkdir()
    >>> for name in ["001A02.JPG", "001A43a.JPG", "002A05.JPG"]:
    ...     (root / "images" / name).touch()
    >>> data = load_fgnet(root)
    >>> data.subject, data.age
    (array(['001', '001', '002'], dtype=object), array([ 2., 43.,  5.]))
    """
    root = _check_root(root, "FG-NET", _LAYOUT)
    images = root / "images"
    if not images.is_dir():
        raise DatasetLayoutError(
            f"FG-NET: no 'images' folder in {str(root)!r}. Expected layout: {_LAYOUT}"
        )
    points = root / "points"
    pts_files = {}
    if points.is_dir():
        pts_files = {
            n.lower(): points / n for n in os.listdir(points) if n.lower().endswith(".pts")
        }
    paths, ages, subjects, landmarks = [], [], [], []
    n_malformed = 0
    for entry in sorted(os.listdir(images)):
        match = _NAME.match(entry)
        if match is None:
            n_malformed += entry.lower().endswith((".jpg", ".jpeg"))
            continue
        paths.append(images / entry)
        ages.append(float(match["age"]))
        subjects.append(match["subject"])
        pts = pts_files.get(f"{match['subject']}a{match['age']}{match['suffix']}.pts".lower())
        landmarks.append(None if pts is None else str(pts))
    if not paths:
        raise DatasetLayoutError(
            f"FG-NET: no image named SSSAaa[x].JPG in {str(images)!r}. Expected layout: {_LAYOUT}"
        )
    return _make_bunch(
        name="fgnet",
        descr=_DESCR,
        paths=paths,
        age=ages,
        gender=[None] * len(paths),
        subject=subjects,
        dropped={"malformed_name": n_malformed},
        landmarks_path=landmarks,
    )
