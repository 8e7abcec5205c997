"""The shipped model: loads offline, predicts every face, beats a constant on held-out-ish data."""

import json

import numpy as np
import pytest

from skagegender.cli import main
from skagegender.pretrained import MODEL_FILE, load


def test_shipped_file_is_small_and_records_its_backbone():
    assert MODEL_FILE.is_file()
    assert MODEL_FILE.stat().st_size < 8_000_000
    model = load()
    assert model.backbone_["name"] == "sface"
    assert model.meta_["backbone"]["sha256"] == model.backbone_["weights_sha256"]
    assert "research" in model.meta_["licence_note"]


def test_every_face_of_a_group_photo(group_photo):
    faces = load().predict_faces(group_photo)
    assert len(faces) == 6
    # t1.jpg shows adults
    assert all(12 <= f["age"] <= 70 for f in faces)
    assert all(f["gender"] in ("female", "male") for f in faces)
    lo, hi = np.array([f["age_interval"] for f in faces]).T
    assert (lo < hi).all()


def test_cli_predict_uses_the_shipped_model(portrait, capsys):
    assert main(["predict", "--json", portrait]) == 0
    records = json.loads(capsys.readouterr().out)
    face = records[0]["faces"][0]
    # Tom Hanks, photographed in his fifties
    assert face["gender"] == "male" and 35 <= face["age"] <= 75


@pytest.mark.slow
def test_fgnet_children_are_predicted_young(shared_data):
    """FG-NET subjects 001-010 were in training (x10), so this is a sanity check, not a score."""
    from skagegender.datasets import load_fgnet

    data = load_fgnet(shared_data / "FGNET")
    young = np.flatnonzero(data.age <= 6)[:8]
    pred = load().predict([data.paths[i] for i in young])
    assert np.median(pred) < 12


def test_shipped_age_gate_reads_the_named_expert_blocks():
    """The shipped file's gate reads the columns the embedder names for each expert."""
    from skagegender.embedding import DLIB_AGE_CLASSES, FINETUNED_AGE_CLASSES
    from skagegender.heads import GatedExpertsRegressor

    model = load()
    gate = model.age_head_.estimator_.estimator
    assert isinstance(gate, GatedExpertsRegressor)
    blocks = model.embedder_.fit().feature_blocks_
    (ft_start, ft_ages), (dlib_start, dlib_ages) = gate.experts_
    assert ft_start == blocks["sface_finetuned_age"].start
    assert dlib_start == blocks["dlib_age"].start
    np.testing.assert_array_equal(ft_ages, FINETUNED_AGE_CLASSES)
    np.testing.assert_array_equal(dlib_ages, DLIB_AGE_CLASSES)
    assert blocks["sface_finetuned_age"].stop - ft_start == len(ft_ages)


def test_shipped_uncertainty_is_calibrated_and_follows_the_face(fgnet_pair):
    """FG-NET 001A02 (a two-year-old boy) and 002A29 (a 29-year-old woman)."""
    from skagegender.heads import AgeAwareCalibratedClassifier, ConformalAgeRegressor

    model = load()
    assert isinstance(model.age_head_, ConformalAgeRegressor)
    assert isinstance(model.gender_head_, AgeAwareCalibratedClassifier)
    assert "held-out" in model.meta_["calibrated_on"]
    X = model.embedder_.transform(fgnet_pair)
    narrow, default, wide = (model.age_head_.predict_interval(X, coverage=c)
                             for c in (0.5, 0.8, 0.95))
    assert (wide[:, 0] <= default[:, 0]).all() and (default[:, 0] <= narrow[:, 0]).all()
    assert (narrow[:, 1] <= default[:, 1]).all() and (default[:, 1] <= wide[:, 1]).all()
    width = default[:, 1] - default[:, 0]
    assert width[0] < width[1]  # a toddler's age is known to within fewer years
    assert default[0, 0] <= 2 <= default[0, 1] and default[1, 0] <= 29 <= default[1, 1]
    details = model.predict_features(X)
    np.testing.assert_allclose(details["age_interval"], default)
    # a child's gender is hard: the calibration takes confidence away from the MLP's
    raw = model.gender_head_.estimator_.predict_proba(X).max(axis=1)
    assert details["gender_probability"][0] < raw[0]
    assert details["gender"].tolist() == ["male", "female"]


def test_coverage_reaches_predict_faces_and_the_cli(fgnet_pair, capsys):
    model = load()
    narrow, wide = (model.predict_faces(fgnet_pair[1], coverage=c)[0]["age_interval"]
                    for c in (0.5, 0.95))
    assert wide[0] < narrow[0] and narrow[1] < wide[1]
    for bad in (0, 1, 1.5, -0.2, True, "0.8"):
        with pytest.raises(ValueError, match="coverage"):
            model.predict_faces("no-such-file.jpg", coverage=bad)  # refused before reading
        with pytest.raises(ValueError, match="coverage"):
            model.predict_features(np.zeros((1, model.n_features_in_)), coverage=bad)
    assert main(["predict", "--json", "--coverage", "0.95", str(fgnet_pair[1])]) == 0
    record = json.loads(capsys.readouterr().out)[0]
    assert record["faces"][0]["age_interval"] == pytest.approx(wide, abs=0.11)
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--coverage", "1", str(fgnet_pair[1])])
    assert exc.value.code == 2
