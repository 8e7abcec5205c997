"""Training on several datasets: weights, degraded copies, a calibration split by subject."""


import numpy as np
import pytest
from sklearn.utils import Bunch

from skagegender.cli import main
from skagegender.training import (
    TrainingSource,
    calibration_split,
    check_sources,
    embed_training_data,
    repeated_rows,
    stack_training_data,
)

#: UTKFace images of the mixed training set (links to the first of ``utkface_paths``).
N_UTK = 120
#: Share of each dataset's images that also join as a degraded copy.
DEGRADED = 0.1


# -- the library, on small generated data ------------------------------------------------

def _part(name, n, *, weight=1, subject=None, copies=None, seed=0):
    rng = np.random.default_rng(seed)
    data = Bunch(paths=[f"{name}/{i}.jpg" for i in range(n)],
                 age=rng.integers(1, 80, n).astype(float),
                 gender=np.array(rng.choice(["female", "male"], n), dtype=object),
                 subject=subject)
    degraded = None if copies is None else (np.asarray(copies), rng.random((len(copies), 3)))
    return Bunch(name=name, weight=weight, data=data, features=rng.random((n, 3)),
                 degraded=degraded,
                 degraded_seeds=None if copies is None else np.arange(len(copies)) + 100)


def test_stacked_datasets_keep_names_weights_and_subjects():
    subjects = np.array([f"{i // 4:03d}" for i in range(20)], dtype=object)
    parts = [_part("utkface", 30, copies=[2, 5, 9]),
             _part("fgnet", 20, weight=10, subject=subjects, copies=[0, 7])]
    data = stack_training_data(parts)
    assert len(data.X) == 30 + 3 + 20 + 2
    assert [c["n_degraded"] for c in data.counts] == [3, 2]
    assert [c["weight"] for c in data.counts] == [1, 10]
    copies = np.flatnonzero(data.degraded)
    # a copy carries its original's labels and group, and its degrade_photo seed
    assert list(data.source[copies]) == [2, 5, 9, 0, 7]
    assert data.groups[copies].tolist() == ["utkface#2", "utkface#5", "utkface#9",
                                            "fgnet:000", "fgnet:001"]
    assert data.images[33:33 + 20] == [f"fgnet/{i}.jpg" for i in range(20)]
    assert data.images[30:33] == [("utkface/2.jpg", 100), ("utkface/5.jpg", 101),
                                 ("utkface/9.jpg", 102)]
    assert (data.sample_weight[data.dataset == "fgnet"] == 10).all()
    # only the allowed images (a fold's training side) and their copies
    fold = stack_training_data(parts, rows={"utkface": np.arange(6)})
    assert fold.counts[0]["n_images"] == 6 and fold.counts[0]["n_degraded"] == 2


def test_calibration_split_holds_out_each_dataset_by_subject():
    subjects = np.array([f"fgnet:{i // 5:03d}" for i in range(50)], dtype=object)
    groups = np.concatenate([np.full(100, None, dtype=object), subjects])
    datasets = np.array(["utkface"] * 100 + ["fgnet"] * 50, dtype=object)
    train, held = calibration_split(150, groups, datasets=datasets, random_state=0)
    assert len(np.intersect1d(train, held)) == 0 and len(train) + len(held) == 150
    assert (held < 100).sum() == 20  # a seeded 20 % of the dataset without subjects
    fg_train, fg_held = set(groups[train[train >= 100]]), set(groups[held[held >= 100]])
    assert fg_train.isdisjoint(fg_held) and len(fg_held) == 2  # 20 % of its 10 subjects
    # one dataset: the same split as without datasets
    alone = calibration_split(100, datasets=np.full(100, "utkface"), random_state=3)
    assert all(np.array_equal(a, b) for a, b in zip(alone, calibration_split(100,
                                                                             random_state=3)))


def test_weights_are_whole_numbers_counted_as_repeats():
    assert repeated_rows([1, 0, 3]).tolist() == [0, 2, 2, 2]
    for bad in ([1.5], [-1], [np.nan]):
        with pytest.raises(ValueError, match="whole numbers"):
            repeated_rows(bad)


def test_sources_are_checked_before_any_work(tmp_path):
    assert check_sources([("fgnet", tmp_path)]) == [TrainingSource("fgnet", tmp_path)]
    for sources, error in (
            ([("fgnet", tmp_path / "missing")], "missing"),
            ([("lfw", tmp_path)], "unknown dataset 'lfw'"),
            ([("fgnet", tmp_path, 1.5)], "whole number"),
            ([("fgnet", tmp_path, 0)], "weight 0"),
            ([TrainingSource("fgnet", tmp_path, degraded=2.0)], "between 0 and 1"),
            ([], "no dataset")):
        with pytest.raises((ValueError, FileNotFoundError), match=error):
            check_sources(sources)


# -- the command line -----------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--dataset", "utkface", "--root", "{utk}", "--dataset", "fgnet"], "2 --dataset but 1 --root"),
    (["--dataset", "utkface", "--root", "{utk}", "--dataset", "fgnet", "--root", "{missing}"],
     "missing"),
    (["--dataset", "utkface", "--root", "{utk}", "--weight", "1", "--weight", "2"],
     "2 --weight for 1 --dataset"),
    (["--dataset", "utkface", "--root", "{utk}", "--weight", "0"], "weight 0"),
])
def test_bad_dataset_sets_are_usage_errors_before_any_work(args, message, tmp_path, capsys):
    utk = tmp_path / "utk"
    utk.mkdir()
    # a real image: were it embedded before the check, the cache folder would hold it
    import cv2

    cv2.imwrite(str(utk / "26_1_2_20170116174525125.jpg.chip.jpg"),
                np.full((64, 64, 3), 128, np.uint8))
    cache = tmp_path / "cache"
    args = [a.format(utk=utk, missing=tmp_path / "missing") for a in args]
    code = main(["train", *args, "--cache", str(cache), "--out", str(tmp_path / "m.skag")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not cache.exists() and not (tmp_path / "m.skag").exists()


@pytest.mark.parametrize("option", [["--weight", "-1"], ["--weight", "1.5"],
                                    ["--degraded-copies", "2"], ["--dataset", "lfw"]])
def test_bad_weights_shares_and_names_are_refused_by_the_parser(option, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--dataset", "fgnet", "--root", str(tmp_path), *option,
              "--out", str(tmp_path / "m.skag")])
    assert exit_.value.code == 2
    assert option[0] in capsys.readouterr().err


@pytest.fixture(scope="module")
def mixed(utkface_paths, fgnet_ten, tmp_path_factory):
    """Three models of the default recipe (shipped layer) on UTKFace + FG-NET.

    ``"mix"``: weights 1 and 10 with degraded copies; ``"w0"`` and ``"w10"``: no
    copies, FG-NET weighted 0 and 10. All share one embedding cache.
    """
    folder = tmp_path_factory.mktemp("mixed")
    utk = folder / "utk"
    utk.mkdir()
    for path in utkface_paths[:N_UTK]:
        (utk / path.rsplit("/", 1)[-1]).symlink_to(path)
    cache = folder / "cache"
    runs = {"mix": ["--weight", "1", "--weight", "10", "--degraded-copies", str(DEGRADED)],
            "w0": ["--weight", "1", "--weight", "0"],
            "w10": ["--weight", "1", "--weight", "10"]}
    out = {}
    for name, extra in runs.items():
        path = folder / f"{name}.skag"
        args = ["train", "--recipe", "default", "--shipped-layer", "--dataset", "utkface",
                "--root", str(utk), "--dataset", "fgnet", "--root", str(fgnet_ten), *extra,
                "--cache", str(cache), "--out", str(path), "--json"]
        out[name] = path
        assert main(args) == 0
    return Bunch(utk=utk, fgnet=fgnet_ten, cache=cache, **out)


def _meta(path):
    from skagegender.model import AgeGenderModel

    return AgeGenderModel.load(path).meta_


@pytest.mark.slow
@pytest.mark.shared_data
def test_two_datasets_train_one_model_whose_meta_records_both(mixed, capsys):
    meta = _meta(mixed.mix)
    assert meta["trained_on"] == "utkface+fgnet" and meta["recipe"] == "default"
    utk, fg = meta["datasets"]
    assert (utk["name"], utk["weight"], utk["n_images"]) == ("utkface", 1, N_UTK)
    assert (fg["name"], fg["weight"], fg["n_images"]) == ("fgnet", 10, 127)
    assert utk["n_faces"] >= N_UTK - 3 and fg["n_faces"] >= 120
    assert utk["n_calibration"] > 0 and fg["n_calibration"] > 0


@pytest.mark.slow
@pytest.mark.shared_data
def test_degraded_copies_are_added_when_asked(mixed):
    with_copies, without = _meta(mixed.mix), _meta(mixed.w10)
    n_copies = [round(DEGRADED * n) for n in (N_UTK, 127)]
    assert [d["n_degraded"] for d in with_copies["datasets"]] == n_copies
    assert [d["n_degraded"] for d in without["datasets"]] == [0, 0]
    # the copies are training rows: all but the few whose face is lost in degradation
    extra = with_copies["n_train"] - without["n_train"]
    assert sum(n_copies) - 3 <= extra <= sum(n_copies)


@pytest.mark.slow
@pytest.mark.shared_data
def test_calibration_rows_share_no_subject_with_training_rows(mixed):
    fg = _meta(mixed.mix)["datasets"][1]
    held_subjects = set(fg["calibration_subjects"])
    assert 0 < len(held_subjects) < 10
    # the split the model was fitted with, on the same rows
    parts = embed_training_data([TrainingSource("utkface", mixed.utk, degraded=DEGRADED),
                                 TrainingSource("fgnet", mixed.fgnet, 10, degraded=DEGRADED)],
                                embedder=_embedder(), cache=mixed.cache)
    data = stack_training_data(parts)
    train, held = calibration_split(len(data.age), data.groups, datasets=data.dataset)
    is_fg = data.dataset == "fgnet"
    train_subjects = {g.split(":")[1] for g in data.groups[train[is_fg[train]]]}
    assert {g.split(":")[1] for g in data.groups[held[is_fg[held]]]} == held_subjects
    assert train_subjects.isdisjoint(held_subjects)
    assert train_subjects | held_subjects == {f"{i:03d}" for i in range(1, 11)}
    # a degraded copy stays on its original's side
    assert set(data.groups[train]).isdisjoint(data.groups[held])


def _embedder():
    from skagegender.training import make_recipe_embedder

    return make_recipe_embedder("default")


@pytest.mark.slow
@pytest.mark.shared_data
def test_a_weight_changes_the_model(mixed):
    from skagegender.model import AgeGenderModel

    images = sorted(str(p) for p in (mixed.fgnet / "images").iterdir())[::4]
    w0, w10 = AgeGenderModel.load(mixed.w0), AgeGenderModel.load(mixed.w10)
    features = w0.embedder_.transform(images)
    age0, age10 = w0.age_head_.predict(features), w10.age_head_.predict(features)
    assert np.abs(age0 - age10).max() > 0.5
    # FG-NET counted 10 times pulls its predictions towards its own ages
    from skagegender.datasets import load_dataset

    truth = load_dataset("fgnet", mixed.fgnet)
    true = dict(zip(map(str, truth.paths), truth.age))
    y = np.array([true[p] for p in images])
    assert np.abs(age10 - y).mean() < np.abs(age0 - y).mean()


def test_the_shipped_mix_is_stacked_by_the_same_function():
    from skagegender.training._default_recipe import FGNET_WEIGHT, training_set

    utk = _part("utkface", 30, copies=[2, 5, 9])
    fg = _part("fgnet", 8, seed=1)
    X, age, gender = training_set(utk.data, utk.features, utk.degraded, fg.data, fg.features,
                                  utk_rows=np.arange(6))
    # 6 allowed UTKFace images, the copies of 2 and 5, each FG-NET image FGNET_WEIGHT times
    assert len(X) == 6 + 2 + 8 * FGNET_WEIGHT
    assert np.array_equal(X[8:8 + FGNET_WEIGHT], np.repeat(fg.features[:1], FGNET_WEIGHT, 0))
    assert list(age[6:8]) == list(utk.data.age[[2, 5]])
    assert all(g is None for g in gender[8:])
