"""Face detection's defaults: score threshold, scale and the retry scale (det_retry_side).

The defaults were chosen by a detection sweep (``skagegender/pretrained/MODEL_CARD.md``,
"Finished studies"); these tests hold the photos behind the choice.
"""

import numpy as np
import pytest
from PIL import Image
from sklearn.utils._param_validation import InvalidParameterError

from skagegender.embedding import ArcFaceEmbedder, load_image


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _scaled_boxes(faces, sx, sy):
    return [np.asarray(f.box, float) * (sx, sy, sx, sy) for f in faces]


@pytest.fixture(scope="module")
def t1_6000x4000(group_photo):
    """The issue's copy: the six-person photo stretched to 6000 x 4000 with Lanczos (RGB)."""
    with Image.open(group_photo) as img:
        return np.asarray(img.convert("RGB").resize((6000, 4000), Image.LANCZOS))


@pytest.fixture(scope="module")
def portrait_x4(fgnet_pair):
    """An FG-NET scan enlarged 4 times (bicubic, 1544 x 1284): a face too large at 1280."""
    import cv2

    image = load_image(fgnet_pair[0], color="rgb")
    h, w = image.shape[:2]
    return cv2.resize(image, (4 * w, 4 * h), interpolation=cv2.INTER_CUBIC)


class _CountingSession:
    """onnxruntime's YuNet session, counting its runs (one per detection scale)."""

    def __init__(self, session):
        self.session, self.runs = session, 0

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, *args, **kwargs):
        self.runs += 1
        return self.session.run(*args, **kwargs)


@pytest.fixture
def yunet_runs(monkeypatch):
    """Detect with an embedder; return (faces, number of YuNet runs)."""

    def detect(embedder, image):
        detector = embedder._backbone().detect
        counting = _CountingSession(detector.session)
        monkeypatch.setattr(detector, "session", counting)
        faces = embedder.detect_faces(image)
        monkeypatch.undo()
        return faces, counting.runs

    return detect


def test_defaults_are_the_measured_ones():
    params = ArcFaceEmbedder().get_params()
    assert (params["min_score"], params["det_max_side"], params["det_retry_side"]) == (
        0.7, 1280, 640)


def test_six_person_photo_at_6000x4000_gives_its_six_faces(group_photo, t1_6000x4000):
    small = ArcFaceEmbedder().detect_faces(group_photo)
    assert len(small) == 6
    faces = ArcFaceEmbedder().detect_faces(t1_6000x4000)
    assert len(faces) == 6 and min(f.score for f in faces) >= 0.7
    truth = _scaled_boxes(small, 6000 / 1280, 4000 / 886)
    for face in faces:  # each on one of the six, none twice
        assert max(_iou(face.box, t) for t in truth) >= 0.5
    assert len({int(np.argmax([_iou(f.box, t) for t in truth])) for f in faces}) == 6


@pytest.mark.slow
def test_full_resolution_or_a_lower_threshold_adds_boxes_on_the_6000x4000_copy(t1_6000x4000):
    """What the defaults avoid: extra "faces" when the photo is detected at full size."""
    full = ArcFaceEmbedder(det_max_side=6000, min_score=0.6).detect_faces(t1_6000x4000)
    assert len(full) > 6


def test_the_retry_finds_the_face_of_a_large_portrait(portrait_x4, fgnet_pair, yunet_runs):
    original = ArcFaceEmbedder().detect_faces(fgnet_pair[0])
    assert len(original) == 1
    faces, runs = yunet_runs(ArcFaceEmbedder(), portrait_x4)
    assert len(faces) == 1 and runs == 2 and faces[0].score >= 0.7
    (truth,) = _scaled_boxes(original, 4, 4)
    assert _iou(faces[0].box, truth) >= 0.5
    # without the retry, no face passes at 1280 px
    faces, runs = yunet_runs(ArcFaceEmbedder(det_retry_side=None), portrait_x4)
    assert faces == [] and runs == 1
    # transform takes the same path
    rows = ArcFaceEmbedder().transform([portrait_x4])
    np.testing.assert_allclose(rows[0], ArcFaceEmbedder().detect_faces(portrait_x4)[0].embedding,
                               atol=1e-5)


def test_the_retry_runs_only_when_it_is_a_smaller_scale_and_nothing_was_found(
        group_photo, yunet_runs):
    blank_small = np.full((480, 640, 3), 128, np.uint8)
    blank_large = np.full((1300, 2000, 3), 128, np.uint8)
    cases = [
        (ArcFaceEmbedder(), blank_small, 1),  # never larger than 640 px: one scale only
        (ArcFaceEmbedder(), blank_large, 2),  # nothing at 1280, again at 640
        (ArcFaceEmbedder(det_retry_side=None), blank_large, 1),
        (ArcFaceEmbedder(det_max_side=640), blank_large, 1),  # the retry is no smaller
        (ArcFaceEmbedder(det_retry_side=1600), blank_large, 1),
        (ArcFaceEmbedder(det_max_side=4000, det_retry_side=1999), blank_large, 2),
        (ArcFaceEmbedder(det_max_side=4000, det_retry_side=2000), blank_large, 1),  # no larger
        (ArcFaceEmbedder(), group_photo, 1),  # faces found at the first scale
        (ArcFaceEmbedder(min_face_size=10_000), group_photo, 2),  # none passes the size
    ]
    for embedder, image, expected in cases:
        faces, runs = yunet_runs(embedder, image)
        assert faces == [] or image is group_photo
        assert runs == expected, (embedder, getattr(image, "shape", image))


def test_cache_key_names_the_retry_only_when_it_is_used():
    old = ArcFaceEmbedder(min_score=0.6, det_max_side=1024, det_retry_side=None)
    assert "det_retry_side" not in old.cache_options()
    assert ArcFaceEmbedder().cache_options()["det_retry_side"] == 640
    keys = {ArcFaceEmbedder(det_retry_side=r).cache_key() for r in (None, 640, 512)}
    assert len(keys) == 3


@pytest.mark.parametrize("params, match", [
    ({"det_retry_side": 16}, "det_retry_side"),
    ({"det_retry_side": 640.0}, "det_retry_side"),
    ({"det_retry_side": "640"}, "det_retry_side"),
    ({"det_retry_side": True}, "det_retry_side"),
    ({"det_max_side": 0}, "det_max_side"),
    ({"min_score": 1.5}, "min_score"),
])
def test_detection_parameters_are_validated(params, match):
    with pytest.raises(InvalidParameterError, match=match):
        ArcFaceEmbedder(**params).fit()


def _fast_model():
    from skagegender.model import AgeGenderModel
    from skagegender.pretrained import MODELS

    return AgeGenderModel.load(MODELS["fast"])


def test_shipped_models_detect_with_the_defaults():
    from skagegender.model import AgeGenderModel
    from skagegender.pretrained import MODEL_FILE

    defaults = ArcFaceEmbedder().get_params()
    for model in (AgeGenderModel.load(MODEL_FILE), _fast_model()):
        params = model.embedder_.get_params()
        for name in ("min_score", "det_max_side", "det_retry_side"):
            assert params[name] == defaults[name], name


def test_a_model_file_keeps_its_retry_setting(tmp_path):
    """det_retry_side decides which faces are found: a model file stores it."""
    from skagegender.model import AgeGenderModel

    model = _fast_model()
    model.embedder_.set_params(det_retry_side=None)
    model.save(tmp_path / "no_retry.skag")
    assert AgeGenderModel.load(tmp_path / "no_retry.skag").embedder_.det_retry_side is None
    model.embedder_.set_params(det_retry_side=320)
    model.save(tmp_path / "retry_320.skag")
    assert AgeGenderModel.load(tmp_path / "retry_320.skag").embedder_.det_retry_side == 320


def test_a_model_file_without_the_retry_setting_gets_its_default(tmp_path):
    """A file written before det_retry_side existed (its embedder has no such attribute)."""
    from skagegender.model import AgeGenderModel

    model = _fast_model()
    del model.embedder_.det_retry_side
    model.save(tmp_path / "older.skag")
    embedder = AgeGenderModel.load(tmp_path / "older.skag").embedder_
    assert embedder.det_retry_side == ArcFaceEmbedder().det_retry_side == 640
