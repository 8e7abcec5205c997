"""Dataset loaders: real UTKFace / FG-NET / Adience labels, and small trees in tmp_path."""

import collections
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import sklearn.utils  # noqa: F401  (imported before a test hides pandas)

from skagegender.datasets import (
    ADIENCE_AGE_GROUPS,
    DATASETS,
    DatasetLayoutError,
    adience_age_group,
    load_adience,
    load_dataset,
    load_fgnet,
    load_imdb_wiki,
    load_morph2,
    load_utkface,
    subsample,
)


def _touch(root, *names):
    for name in names:
        path = Path(root) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


# --------------------------------------------------------------------------- common


def test_import_is_light():
    code = (
        "import sys, skagegender.datasets; "
        "print(sorted(m for m in ('pandas', 'scipy.io', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- registry


def test_load_dataset_reads_each_name_with_its_loader(tmp_path):
    _touch(tmp_path, "26_1_2_20170116174525125.jpg.chip.jpg")
    data = load_dataset("utkface", tmp_path)
    assert data.name == "utkface" and data.age.tolist() == [26.0]
    # every name reaches its own loader: an empty folder gets that dataset's layout error
    own_words = {"utkface": "UTKFace", "fgnet": "FG-NET", "adience": "Adience",
                 "imdb": "imdb_crop/imdb.mat", "wiki": "wiki_crop/wiki.mat", "morph2": "MORPH-II"}
    assert set(own_words) == set(DATASETS)
    empty = tmp_path / "empty"
    empty.mkdir()
    for name, words in own_words.items():
        with pytest.raises(DatasetLayoutError, match=words):
            load_dataset(name, empty)
    with pytest.raises(ValueError, match="Unknown dataset 'lfw'; choose from"):
        load_dataset("lfw", empty)


def test_subsample_is_a_seeded_subset_in_the_original_order(tmp_path):
    names = [f"{age}_{age % 2}_0_2017010{age % 10}.jpg.chip.jpg" for age in range(10, 40)]
    _touch(tmp_path, *names)
    data = load_utkface(tmp_path)
    part = subsample(data, 12)
    assert len(part.paths) == 12 and len(data.paths) == 30  # the original is untouched
    paths = list(data.paths)
    rows = [paths.index(path) for path in part.paths]
    assert rows == sorted(rows) and len(set(rows)) == 12 and rows != list(range(12))
    # every per-image column follows the same rows
    np.testing.assert_array_equal(part.age, data.age[rows])
    assert list(part.gender) == [data.gender[i] for i in rows]
    assert list(part.race) == [data.race[i] for i in rows]
    if data.get("frame") is not None:
        assert part.frame["age"].tolist() == part.age.tolist()
    assert list(subsample(data, 12).paths) == list(part.paths)  # seeded
    assert list(subsample(data, 12, random_state=1).paths) != list(part.paths)
    assert subsample(data, None) is data and subsample(data, 30) is data


def test_frame_is_none_without_pandas(tmp_path, monkeypatch):
    _touch(tmp_path, "30_0_1_20170109.jpg.chip.jpg")
    monkeypatch.setitem(sys.modules, "pandas", None)  # makes `import pandas` raise ImportError
    data = load_utkface(tmp_path)
    assert data.frame is None
    assert data.age.tolist() == [30.0]


@pytest.mark.parametrize(
    "loader", [load_utkface, load_fgnet, load_adience, load_imdb_wiki, load_morph2]
)
def test_missing_root_raises_layout_error(loader, tmp_path):
    with pytest.raises(DatasetLayoutError, match="Expected layout") as info:
        loader(tmp_path / "nope")
    assert isinstance(info.value, FileNotFoundError)


# --------------------------------------------------------------------------- UTKFace


@pytest.mark.shared_data
def test_utkface_real_folder(shared_data):
    root = (shared_data / "UTKFace")
    data = load_utkface(root)
    assert len(data.paths) == len(os.listdir(root)) == 18978
    assert data.paths == sorted(data.paths)
    assert all(os.path.isabs(p) for p in data.paths)
    assert os.path.isfile(data.paths[0]) and os.path.isfile(data.paths[-1])
    assert data.n_dropped == 0
    assert (data.age.min(), data.age.max()) == (1.0, 116.0)
    assert collections.Counter(data.gender.tolist()) == {"male": 9988, "female": 8990}
    assert sum(r is None for r in data.race) == 1  # 39_1_20170116174525125.jpg.chip.jpg
    assert data.subject is None and data.fold is None and data.age_group is None
    assert data.frame.shape == (18978, 4)
    assert data.frame["age"].mean() == pytest.approx(data.age.mean())
    # the file name whose "jpg" lacks its dot still parses
    bad_dot = [p for p in data.paths if p.endswith("20170116232725357jpg.chip.jpg")]
    assert len(bad_dot) == 1


def test_utkface_names(tmp_path):
    _touch(
        tmp_path,
        "26_1_2_20170116174525125.jpg.chip.jpg",  # female, Asian
        "61_1_20170109142408075.jpg.chip.jpg",  # no race field
        "55_0_0_20170116232725357jpg.chip.jpg",  # no dot before jpg
        "24_0_1_20170116220224657 .jpg.chip.jpg",  # a space before the extension
        "7_2_0_20170109.jpg.chip.jpg",  # gender 2: malformed
        "abc_0_0_20170109.jpg.chip.jpg",  # malformed
        "README.txt",  # not an image: ignored
    )
    data = load_utkface(tmp_path)
    names = [Path(p).name for p in data.paths]
    assert names == sorted(names) and len(names) == 4
    labels = dict(zip(names, zip(data.age, data.gender, data.race)))
    assert labels["26_1_2_20170116174525125.jpg.chip.jpg"] == (26.0, "female", "Asian")
    assert labels["61_1_20170109142408075.jpg.chip.jpg"] == (61.0, "female", None)
    assert labels["55_0_0_20170116232725357jpg.chip.jpg"] == (55.0, "male", "White")
    assert labels["24_0_1_20170116220224657 .jpg.chip.jpg"] == (24.0, "male", "Black")
    assert data.n_dropped == 2 and data.dropped == {"malformed_name": 2}


def test_utkface_nested_folder_is_a_layout_error(tmp_path):
    _touch(tmp_path, "UTKFace/26_1_2_20170116174525125.jpg.chip.jpg")
    with pytest.raises(DatasetLayoutError, match=r"\[age\]_\[gender\]"):
        load_utkface(tmp_path)


# --------------------------------------------------------------------------- FG-NET


@pytest.mark.shared_data
def test_fgnet_real_folder(shared_data):
    root = (shared_data / "FGNET")
    data = load_fgnet(root)
    names = sorted(p.name for p in (root / "images").iterdir())
    assert len(data.paths) == len(names) >= 127 and data.n_dropped == 0
    assert sorted(set(data.subject)) == sorted({name[:3] for name in names})
    assert {f"{i:03d}" for i in range(1, 11)} <= set(data.subject)
    assert sorted(data.age) == sorted(float(name[4:6]) for name in names)
    assert (data.age.min(), data.age.max()) == (0.0, 69.0)
    assert all(g is None for g in data.gender)
    assert all(p is not None and os.path.isfile(p) for p in data.landmarks_path)
    i = data.paths.index(str(root.resolve() / "images" / "001A43b.JPG"))
    assert (data.subject[i], data.age[i]) == ("001", 43.0)
    assert data.landmarks_path[i].endswith("001a43b.pts")
    assert list(data.frame.columns) == ["path", "age", "gender", "subject", "landmarks_path"]


def test_fgnet_names(tmp_path):
    _touch(
        tmp_path,
        "images/001A02.JPG",
        "images/001a43a.jpg",
        "images/001A43b.JPG",
        "images/012A7.JPG",  # one age digit: malformed
        "images/Thumbs.db",
        "points/001a02.pts",
        "points/001a43a.pts",
    )
    data = load_fgnet(tmp_path)
    assert [Path(p).name for p in data.paths] == ["001A02.JPG", "001A43b.JPG", "001a43a.jpg"]
    assert data.age.tolist() == [2.0, 43.0, 43.0]
    assert [p and Path(p).name for p in data.landmarks_path] == ["001a02.pts", None, "001a43a.pts"]
    assert data.dropped == {"malformed_name": 1}


def test_fgnet_without_images_folder(tmp_path):
    _touch(tmp_path, "001A02.JPG")
    with pytest.raises(DatasetLayoutError, match="images/SSSAaa"):
        load_fgnet(tmp_path)


# --------------------------------------------------------------------------- Adience


@pytest.mark.parametrize(
    "value, group",
    [
        ("(0, 2)", 0),
        ("(60, 100)", 7),
        ("(8, 12)", 2),  # the files' spelling of 8-13
        ("(38, 42)", 5),
        ("(38, 48)", 5),  # centre 43
        ("(27, 32)", 4),
        ("(8, 23)", 3),  # centre 15.5
        ("2", 0),
        ("3", 0),  # tie between 0-2 and 4-6: the younger
        ("13", 2),
        ("22", 3),
        ("23", 4),
        ("35", 4),  # tie between 25-32 and 38-43: the younger
        ("36", 5),
        ("45", 5),
        ("56", 6),
        ("57", 7),
        ("None", None),
        ("", None),
        ("(25, )", None),
    ],
)
def test_adience_age_group(value, group):
    assert adience_age_group(value) == group


@pytest.mark.shared_data
def test_adience_real_fold_files(shared_data):
    root = (shared_data / "Adience")
    data = load_adience(root, require_images=False)
    # 13,923 rows in all; 102 say "None" and the last row of fold 4 is cut short
    assert len(data.paths) + data.n_dropped == 13923
    assert data.dropped == {"no_age": 103}
    assert collections.Counter(data.fold.tolist()) == {0: 4432, 1: 3693, 2: 2567, 3: 1043, 4: 2085}
    # Group sizes from the raw age strings, e.g. 25-32: 3931 "(25, 32)" + 1 "(27, 32)"
    # + 55 "23" + 40 "34" + 201 "35"; 8-13: 1589 "(8, 12)" + 167 "13".
    assert collections.Counter(data.age_group.tolist()) == {
        0: 2034, 1: 1752, 2: 1756, 3: 1087, 4: 4228, 5: 1621, 6: 668, 7: 674
    }
    assert collections.Counter(data.gender.tolist()) == {"female": 6837, "male": 6216, None: 767}
    midpoints = np.array([(lo + hi) / 2 for lo, hi in ADIENCE_AGE_GROUPS])
    np.testing.assert_array_equal(data.age, midpoints[data.age_group])
    assert len(set(data.subject)) == 90
    assert data.paths[0] == str(
        root.resolve() / "faces" / "30601258@N03"
        / "coarse_tilt_aligned_face.1.10399646885_67c7d20df9_o.jpg"
    )
    with pytest.raises(DatasetLayoutError, match="require_images=False"):
        load_adience(root)  # the shared copy has no faces/ folder


def _adience_tree(root):
    header = (
        "user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\t"
        "tilt_ang\tfiducial_yaw_angle\tfiducial_score\r\n"
    )
    rows = {
        0: ["u1@N01\ta_o.jpg\t1\t(25, 32)\tf\t0\t414\t1086\t1383\t-115\t30\t17",
            "u1@N01\tb_o.jpg\t2\tNone\t\t1\t2\t3\t4\t5\t6\t7",
            "u1@N01\tc_o.jpg\t3\t35\tm\t1\t2\t3\t4\t5\t6\t7"],
        1: ["u2@N01\td_o.jpg\t4\t(8, 12)\tu\t1\t2\t3\t4\t5\t6\t7",
            "u2@N01\te_o.jpg\t5\t(60, 100)\tm\t1\t2\t3\t4"],  # short row, still labeled
        2: ["u3@N01\tf_o.jpg\t6\t(38, 48)\t\t1\t2\t3\t4\t5\t6\t7"],
        3: ["u4@N01\tg_o.jpg\t7\t(0, 2)\tf\t1\t2\t3\t4\t5\t6\t7"],
        4: ["u5@N01\th_o.jpg\t8\t(4, 6)\tm\t1\t2\t3\t4\t5\t6\t7",
            "u5@N01\t9509"],  # cut short, no age
    }
    for fold, lines in rows.items():
        (root / f"fold_{fold}_data.txt").write_text(header + "\r\n".join(lines) + "\r\n")
    for user, image, face in [("u1@N01", "a_o.jpg", 1), ("u1@N01", "c_o.jpg", 3),
                              ("u2@N01", "d_o.jpg", 4), ("u2@N01", "e_o.jpg", 5),
                              ("u3@N01", "f_o.jpg", 6), ("u5@N01", "h_o.jpg", 8)]:
        _touch(root, f"faces/{user}/coarse_tilt_aligned_face.{face}.{image}")  # g_o.jpg missing


def test_adience_small_tree(tmp_path):
    _adience_tree(tmp_path)
    data = load_adience(tmp_path)
    assert all(os.path.isfile(p) for p in data.paths)
    assert [Path(p).name for p in data.paths] == [
        "coarse_tilt_aligned_face.1.a_o.jpg",
        "coarse_tilt_aligned_face.3.c_o.jpg",
        "coarse_tilt_aligned_face.4.d_o.jpg",
        "coarse_tilt_aligned_face.5.e_o.jpg",
        "coarse_tilt_aligned_face.6.f_o.jpg",
        "coarse_tilt_aligned_face.8.h_o.jpg",
    ]
    assert data.fold.tolist() == [0, 0, 1, 1, 2, 4]
    assert data.age_group.tolist() == [4, 4, 2, 7, 5, 1]
    assert data.age.tolist() == [28.5, 28.5, 10.5, 80.0, 40.5, 5.0]
    assert data.gender.tolist() == ["female", "male", None, "male", None, "male"]
    assert data.subject.tolist() == ["u1@N01", "u1@N01", "u2@N01", "u2@N01", "u3@N01", "u5@N01"]
    assert data.dropped == {"no_age": 2, "missing_image": 1} and data.n_dropped == 3


def test_adience_missing_fold_file(tmp_path):
    _adience_tree(tmp_path)
    (tmp_path / "fold_3_data.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="fold_3_data.txt"):
        load_adience(tmp_path)


def test_adience_drops_are_logged(tmp_path, caplog):
    _adience_tree(tmp_path)
    with caplog.at_level("WARNING", logger="skagegender.datasets"):
        load_adience(tmp_path)
    assert "dropped 3 entries (2 no_age, 1 missing_image)" in caplog.text


# --------------------------------------------------------------------------- IMDB-WIKI


def _cells(values):
    out = np.empty((1, len(values)), dtype=object)
    out[0, :] = values
    return out


def _write_mat(root, source, entries):
    """Write <source>_crop/<source>.mat as the release does: a 1x1 struct of 1xN fields."""
    cols = {k: [e[k] for e in entries] for k in entries[0]}
    struct = {
        "dob": np.array([cols["dob"]], dtype=np.float64),
        "photo_taken": np.array([cols["photo_taken"]], dtype=np.uint16),
        "full_path": _cells(cols["full_path"]),
        "gender": np.array([cols["gender"]], dtype=np.float64),
        "name": _cells(cols["name"]),
        "face_location": _cells([np.array([[10.0, 10.0, 90.0, 90.0]])] * len(entries)),
        "face_score": np.array([cols["face_score"]], dtype=np.float64),
        "second_face_score": np.array([cols["second_face_score"]], dtype=np.float64),
    }
    if source == "imdb":
        struct["celeb_names"] = _cells(sorted(set(cols["name"])))
        struct["celeb_id"] = np.arange(1, len(entries) + 1)[None, :]
    folder = root / f"{source}_crop"
    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(folder / f"{source}.mat", {source: struct})
    for e in entries:
        _touch(folder, e["full_path"])


def _entry(path, dob, taken, gender=1.0, face=3.0, second=np.nan, name="A B"):
    return {"dob": dob, "photo_taken": taken, "full_path": path, "gender": gender,
            "face_score": face, "second_face_score": second, "name": name}


def _datenum(year, month, day):
    """MATLAB serial date number (day 1 = 0000-01-01) of a date."""
    import datetime

    return float(datetime.date(year, month, day).toordinal() + 366)


def test_imdb_mat_layout_and_filters(tmp_path):
    entries = [
        _entry("01/nm0000001_rm124825600_1899-5-10_1968.jpg", _datenum(1899, 5, 10), 1968,
               name="Fred Astaire"),
        _entry("01/nm0000001_rm3343756032_1899-5-10_1970.jpg", _datenum(1899, 5, 10), 1970,
               gender=np.nan, name="Fred Astaire"),
        _entry("02/nm0000002_rm1_1924-9-16_2004.jpg", _datenum(1924, 9, 16), 2004, gender=0.0,
               name="Lauren Bacall"),  # born after 1 July: 79, not 80
        _entry("03/nm0000003_rm2_1934-9-28_1960.jpg", _datenum(1934, 9, 28), 1960,
               face=-np.inf),  # no face
        _entry("03/nm0000003_rm3_1934-9-28_1961.jpg", _datenum(1934, 9, 28), 1961,
               face=0.5),  # weak face
        _entry("04/nm0000004_rm4_1949-1-24_1980.jpg", _datenum(1949, 1, 24), 1980,
               second=1.7),  # second face
        _entry("05/nm0000005_rm5_2015-1-1_1990.jpg", _datenum(2015, 1, 1), 1990),  # age < 0
        _entry("06/nm0000006_rm6_1-1-1_2000.jpg", 0.0, 2000),  # unusable dob
        _entry("07/nm0000007_rm7_1950-1-1_2000.jpg", _datenum(1950, 1, 1), 2000),  # no file
    ]
    _write_mat(tmp_path, "imdb", entries)
    (tmp_path / "imdb_crop" / entries[-1]["full_path"]).unlink()
    raw = scipy.io.loadmat(tmp_path / "imdb_crop" / "imdb.mat")["imdb"]
    assert raw.shape == (1, 1) and raw[0, 0]["dob"].shape == (1, 9)  # the release's nesting

    data = load_imdb_wiki(tmp_path, "imdb")
    assert data.age.tolist() == [69.0, 71.0, 79.0]
    assert data.gender.tolist() == ["male", None, "female"]
    assert data.subject.tolist() == ["nm0000001", "nm0000001", "nm0000002"]
    assert data.paths[0] == str(tmp_path.resolve() / "imdb_crop" / entries[0]["full_path"])
    assert data.dropped == {"no_face": 2, "second_face": 1, "bad_age": 2, "missing_image": 1}
    assert data.n_dropped == 6

    lenient = load_imdb_wiki(tmp_path, "imdb", min_face_score=0.0, max_second_face_score=2.0,
                             require_images=False)
    assert len(lenient.paths) == 6 and lenient.dropped["no_face"] == 1
    assert lenient.dropped["second_face"] == 0 and lenient.dropped["bad_age"] == 2


def test_wiki_source_and_errors(tmp_path):
    _write_mat(tmp_path, "wiki", [
        _entry("17/10000217_1981-05-05_2009.jpg", 723671.0, 2009, name="Sami Jauhojärvi"),
    ])
    data = load_imdb_wiki(tmp_path, source="wiki")
    assert data.age.tolist() == [28.0] and data.subject.tolist() == ["10000217"]
    assert data.name == "wiki"
    with pytest.raises(DatasetLayoutError, match="imdb.mat"):
        load_imdb_wiki(tmp_path, source="imdb")
    with pytest.raises(ValueError, match="source"):
        load_imdb_wiki(tmp_path, source="morph")
    scipy.io.savemat(tmp_path / "wiki_crop" / "wiki.mat", {"other": np.zeros(3)})
    with pytest.raises(DatasetLayoutError, match="official struct"):
        load_imdb_wiki(tmp_path, source="wiki")


# --------------------------------------------------------------------------- MORPH-II

_MORPH_HEADER = "id_num,picture_num,dob,doa,race,gender,facial_hair,age,age_diff,glasses,photo"


def test_morph2_academic_csv(tmp_path):
    rows = [
        "003503,0,1/2/1981,4/2/2002,B,M,0,21,0,0,Album2/003503_00M21.JPG",
        "003503,1,1/2/1981,5/2/2003,B,M,0,22,1,0,Album2/003503_01M22.JPG",
        "041111,0,1/2/1960,4/2/2002,W,F,0,42,0,1,Album2/041111_00F42.JPG",
        "041112,0,1/2/1960,4/2/2002,H,X,0,,0,1,Album2/041112_00M42.JPG",  # no age
        ",0,1/2/1960,4/2/2002,W,F,0,30,0,1,Album2/000000_00F30.JPG",  # no id
        "041113,0,1/2/1960,4/2/2002,W,F,0,30,0,1,Album2/041113_00F30.JPG",  # no file on disk
    ]
    (tmp_path / "morph_2008_nonCommercial.csv").write_text(_MORPH_HEADER + "\n" + "\n".join(rows))
    _touch(tmp_path, *[r.rsplit(",", 1)[1] for r in rows[:3]])
    data = load_morph2(tmp_path)
    assert data.subject.tolist() == ["003503", "003503", "041111"]
    assert data.age.tolist() == [21.0, 22.0, 42.0]
    assert data.gender.tolist() == ["male", "male", "female"]
    assert data.race.tolist() == ["Black", "Black", "White"]
    assert all(os.path.isfile(p) for p in data.paths)
    assert data.dropped == {"bad_age": 1, "no_subject": 1, "no_file": 0, "missing_image": 1}
    # the CSV file itself may be passed; without images, only the label filters apply
    labels = load_morph2(tmp_path / "morph_2008_nonCommercial.csv", require_images=False)
    assert len(labels.paths) == 4 and labels.n_dropped == 2


def test_morph2_tolerant_columns(tmp_path):
    (tmp_path / "labels.csv").write_text(
        "Subject_ID\tAGE\tSex\tFile_Name\n17\t30\tf\timgs\\17_0.jpg\n17\t31\tm\timgs\\17_1.jpg\n"
    )
    data = load_morph2(tmp_path, require_images=False)
    assert data.subject.tolist() == ["17", "17"]
    assert data.gender.tolist() == ["female", "male"]
    assert data.race is None
    assert data.paths[0] == str(tmp_path.resolve() / "imgs" / "17_0.jpg")


def test_morph2_layout_errors(tmp_path):
    (tmp_path / "a.csv").write_text("id_num,age,gender,photo\n1,20,M,x.jpg\n")
    (tmp_path / "b.csv").write_text("id_num,age,gender,photo\n1,20,M,x.jpg\n")
    with pytest.raises(DatasetLayoutError, match="exactly one .csv"):
        load_morph2(tmp_path)
    (tmp_path / "b.csv").unlink()
    (tmp_path / "a.csv").write_text("id_num,gender,photo\n1,M,x.jpg\n")
    with pytest.raises(DatasetLayoutError, match="no age column"):
        load_morph2(tmp_path)
