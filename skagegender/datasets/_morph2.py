"""MORPH-II loader: the academic release's CSV and its image folders."""

import csv
import math
from pathlib import Path

from ._base import DatasetLayoutError, _fill_doc, _make_bunch

#: Accepted column names (matched case-insensitively), first match wins.
MORPH2_COLUMNS = {
    "subject": ("id_num", "subject_id", "subject", "id"),
    "age": ("age",),
    "gender": ("gender", "sex"),
    "race": ("race", "ethnicity"),
    "file": ("photo", "file_name", "filename", "file", "image", "path"),
}
_RACES = {"A": "Asian", "B": "Black", "H": "Hispanic", "I": "Indian", "O": "Other", "W": "White"}
_GENDERS = {"F": "female", "M": "male"}
_LAYOUT = (
    "a folder holding one CSV file of the academic release (columns id_num, age, gender, race "
    "and photo, e.g. id_num,picture_num,dob,doa,race,gender,facial_hair,age,age_diff,glasses,"
    "photo) with photo paths relative to that folder, e.g. Album2/003503_00M21.JPG"
)
_DESCR = """MORPH-II (academic release)
===========================

About 55,000 mugshot-style photos of 13,000 people aged 16-77, with several
photos per person taken over years; labels from records (age at the photo,
gender, race). Splits must keep each person on one side: images of the same
person in training and test make the error look about half as large.
Academic licence from UNCW. Ricanek & Tesafaye, "MORPH: A Longitudinal Image
Database of Normal Adult Age-Progression", FG 2006.
"""


@_fill_doc
def load_morph2(root, *, require_images=True):
    """Load MORPH-II from the academic release's CSV file.

    The CSV's columns are found case-insensitively among the names in
    :data:`MORPH2_COLUMNS` (the release's own are ``id_num``, ``age``,
    ``gender``, ``race`` and ``photo``); comma, tab and semicolon separated
    files are read. Image paths in the file are relative to the CSV's folder.
    Rows are dropped and counted in ``dropped`` under the first reason that
    applies: ``"bad_age"`` (not a number, or negative), ``"no_subject"``
    (empty id), ``"no_file"`` (empty file name) and, with
    ``require_images=True``, ``"missing_image"``.

    Parameters
    ----------
    root : str or path-like
        The release folder holding exactly one ``.csv`` file, or the CSV file
        itself.
    require_images : bool, default=True
        Whether each image file must exist.

    Returns
    -------
    %(bunch)s

        For MORPH-II: ``subject`` is ``id_num`` (as str), ``gender`` maps
        ``M``/``F`` (anything else is None), ``race`` spells out the codes
        A, B, H, I, O, W (Asian, Black, Hispanic, Indian, Other, White) and
        keeps other values as written; ``fold`` and ``age_group`` are None.

    Raises
    ------
    DatasetLayoutError
        If there is no (or more than one) CSV file, or it lacks a needed
        column.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from skagegender.datasets import load_morph2
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "morph_2008_nonCommercial.csv").write_text(
    ...     "id_num,picture_num,race,gender,age,photo\\n"
    ...     "3503,0,B,M,21,Album2/003503_00M21.JPG\\n"
    ...     "3503,1,B,M,22,Album2/003503_01M22.JPG\\n")
    >>> data = load_morph2(root, require_images=False)
    >>> data.subject, data.age
    (array(['3503', '3503'], dtype=object), array([21., 22.]))
    >>> data.race
    array(['Black', 'Black'], dtype=object)
    """
    csv_path = _find_csv(root)
    folder = csv_path.parent
    with open(csv_path, newline="", encoding="utf-8-sig") as file:
        sample = file.read(4096)
        file.seek(0)
        try:
            dialect = csv.Sniffer().sniff(sample, delimiters=",\t;")
        except csv.Error:
            dialect = csv.excel
        reader = csv.reader(file, dialect)
        header = [name.strip().lower() for name in next(reader, [])]
        column = {}
        for key, names in MORPH2_COLUMNS.items():
            found = [header.index(name) for name in names if name in header]
            if not found and key != "race":
                raise DatasetLayoutError(
                    f"MORPH-II: {str(csv_path)!r} has no {key} column (looked for "
                    f"{', '.join(names)}; found {', '.join(header)}). Expected layout: {_LAYOUT}"
                )
            column[key] = found[0] if found else None
        rows = [row for row in reader if any(field.strip() for field in row)]

    def field(row, key):
        index = column[key]
        return row[index].strip() if index is not None and index < len(row) else ""

    paths, ages, genders, races, subjects = [], [], [], [], []
    dropped = {"bad_age": 0, "no_subject": 0, "no_file": 0}
    if require_images:
        dropped["missing_image"] = 0
    for row in rows:
        try:
            age = float(field(row, "age"))
        except ValueError:
            age = math.nan
        if not (math.isfinite(age) and age >= 0):
            dropped["bad_age"] += 1
            continue
        subject = field(row, "subject")
        if not subject:
            dropped["no_subject"] += 1
            continue
        name = field(row, "file").replace("\\", "/")
        if not name:
            dropped["no_file"] += 1
            continue
        path = (folder / name).resolve()
        if require_images and not path.is_file():
            dropped["missing_image"] += 1
            continue
        race = field(row, "race")
        paths.append(path)
        ages.append(age)
        genders.append(_GENDERS.get(field(row, "gender").upper()))
        races.append(_RACES.get(race.upper(), race) if race else None)
        subjects.append(subject)
    return _make_bunch(
        name="morph2",
        descr=_DESCR,
        paths=paths,
        age=ages,
        gender=genders,
        subject=subjects,
        race=races if column["race"] is not None else None,
        dropped=dropped,
    )


def _find_csv(root):
    """The release's CSV: ``root`` itself, or the single ``.csv`` inside it."""
    root = Path(root).expanduser().resolve()
    if root.is_file():
        return root
    if not root.is_dir():
        raise DatasetLayoutError(
            f"MORPH-II: {str(root)!r} does not exist. Expected layout: {_LAYOUT}"
        )
    found = sorted(p for p in root.iterdir() if p.suffix.lower() == ".csv" and p.is_file())
    if len(found) != 1:
        raise DatasetLayoutError(
            f"MORPH-II: expected exactly one .csv file in {str(root)!r}, found "
            f"{[p.name for p in found]} (pass the CSV file itself to choose). "
            f"Expected layout: {_LAYOUT}"
        )
    return found[0]
