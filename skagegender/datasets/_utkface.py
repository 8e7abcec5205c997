"""UTKFace loader: labels are in the file names."""

import os
import re

from ._base import DatasetLayoutError, _check_root, _fill_doc, _make_bunch

UTKFACE_RACES = ("White", "Black", "Asian", "Indian", "Others")

# [age]_[gender]_[race]_[date&time].jpg.chip.jpg; the race field is missing
# from a few official names, one official name lacks the dot before "jpg" and
# one has a space before it ("24_0_1_20170116220224657 .jpg.chip.jpg").
_NAME = re.compile(
    r"^(?P<age>\d{1,3})_(?P<gender>[01])_(?:(?P<race>[0-4])_)?(?P<date>\d+) ?\.?jpg\.chip\.jpg$",
    re.IGNORECASE,
)
_LAYOUT = (
    "a folder holding the 'aligned & cropped' images directly, named "
    "[age]_[gender]_[race]_[date&time].jpg.chip.jpg"
)
_DESCR = """UTKFace (aligned & cropped)
===========================

200x200 dlib-aligned face crops, labeled in the file name
``[age]_[gender]_[race]_[date&time].jpg.chip.jpg``: age 0-116, gender 0 male /
1 female, race 0-4 White, Black, Asian, Indian, Others. Labels are estimates
checked by a person. There are no subject ids, so splits cannot keep a person
on one side. Non-commercial research use only; copyright stays with the image
owners. Zhang, Song & Qi, "Age Progression/Regression by Conditional
Adversarial Autoencoder", CVPR 2017.
"""


@_fill_doc
def load_utkface(root):
    """Load UTKFace from its official folder of labeled file names.

    Files whose names end in ``.jpg`` but do not follow the official pattern
    are dropped and counted (``dropped["malformed_name"]``); a name without
    the race field gets race None. Other files are ignored. Paths are
    sorted, so the order is the same on every machine.

    Parameters
    ----------
    root : str or path-like
        The folder holding the images directly
        (``root/[age]_[gender]_[race]_[date&time].jpg.chip.jpg``).

    Returns
    -------
    %(bunch)s

        For UTKFace: ``subject``, ``fold`` and ``age_group`` are None;
        ``race`` holds ``"White"``, ``"Black"``, ``"Asian"``, ``"Indian"``,
        ``"Others"`` or None.

    Raises
    ------
    DatasetLayoutError
        If ``root`` is not a folder or holds no UTKFace image.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from skagegender.datasets import load_utkface
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ["26_1_2_20170116174525125.jpg.chip.jpg", "3_0_20170109.jpg.chip.jpg"]:
    ...     (root / name).touch()
    >>> data = load_utkface(root)
    >>> data.age, data.gender
    (array([26.,  3.]), array(['female', 'male'], dtype=object))
    >>> data.race
    array(['Asian', None], dtype=object)
    """
    root = _check_root(root, "UTKFace", _LAYOUT)
    paths, ages, genders, races = [], [], [], []
    n_malformed = 0
    for entry in sorted(os.listdir(root)):
        match = _NAME.match(entry)
        if match is None:
            n_malformed += entry.lower().endswith(".jpg")
            continue
        paths.append(root / entry)
        ages.append(float(match["age"]))
        genders.append("male" if match["gender"] == "0" else "female")
        race = match["race"]
        races.append(None if race is None else UTKFACE_RACES[int(race)])
    if not paths:
        raise DatasetLayoutError(
            f"UTKFace: no image named like the official release in {str(root)!r}. "
            f"Expected layout: {_LAYOUT}"
        )
    return _make_bunch(
        name="utkface",
        descr=_DESCR,
        paths=paths,
        age=ages,
        gender=genders,
        race=races,
        dropped={"malformed_name": n_malformed},
    )
