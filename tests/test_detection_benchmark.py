"""benchmarks/detection.py: its counting rules, and a smoke run on tiny data.

The smoke run writes into ``tmp_path`` (never over the committed results in
``benchmarks/results``) and reads back what it measured.
"""

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "detection.py"


@pytest.fixture(scope="module")
def detection():
    spec = importlib.util.spec_from_file_location("detection_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_uses_no_machine_path_and_no_private_api():
    source = SCRIPT.read_text()
    assert not re.search(r"[\"']/(?:home|root|work|opt|usr|tmp|mnt)/", source)
    assert not re.findall(r"skagegender(?:\.\w+)*\._\w+", source)
    assert "--out-dir" in source and "--limit" in source


def _det(score, x1, y1, x2, y2):
    return [score, float(np.sqrt((x2 - x1) * (y2 - y1))), x1, y1, x2, y2]


def test_match_is_one_to_one_and_counts_the_rest_as_extra(detection):
    truth = [[0, 0, 10, 10], [100, 100, 110, 110]]
    dets = [_det(0.9, 0, 0, 10, 10), _det(0.8, 1, 1, 11, 11),  # two boxes on one face
            _det(0.7, 100, 100, 111, 111), _det(0.6, 500, 500, 510, 510)]
    assert detection.match(dets, truth) == (2, 2)
    assert detection.match([], truth) == (0, 0)
    assert detection.match(dets[:1], []) == (0, 1)


def test_two_scale_settings_fall_back_and_merge(detection):
    row = {"detections": {"1024": [_det(0.55, 0, 0, 10, 10)],
                          "640": [_det(0.9, 1, 1, 11, 11), _det(0.7, 50, 50, 60, 60)]}}
    assert detection.dets_at(row, "1024", 0.6) == []
    # nothing passes at 1024, so the 640 detections count
    assert [d[0] for d in detection.dets_at(row, "1024>640", 0.6)] == [0.9, 0.7]
    assert [d[0] for d in detection.dets_at(row, "1024>640", 0.5)] == [0.55]
    # both scales, the overlapping box suppressed by the higher score
    assert [d[0] for d in detection.dets_at(row, "1024+640", 0.5)] == [0.9, 0.7]
    assert detection.settings((640, 1024, 0)) == ["640", "1024", "full", "1024>640",
                                                  "full>640", "1024+640", "full+640"]
    assert detection.settings((1024, 0)) == ["1024", "full"]


def test_extra_boxes_on_one_face_images_count_as_false_positives(detection):
    one = {"detections": {"640": [_det(0.9, 0, 0, 10, 10), _det(0.65, 50, 50, 60, 60)]}}
    none = {"detections": {"640": [_det(0.75, 0, 0, 10, 10)]}}
    assert detection.face_set_stats([one, none], "640", 0.6) == {
        "n": 2, "found": 1.0, "multi": 0.5, "extra": 1}
    assert detection.face_set_stats([one, none], "640", 0.7)["extra"] == 0
    results = {"face_sets": {"A": [one]}, "no_face": [none]}
    entry = detection.summarize(results, (0.6, 0.8), (640,))["640@0.6"]
    assert entry["face_set_extra"] == 1 and entry["no_face"]["detections"] == 1
    assert entry["false_positives"] == 2  # one no-face box and one extra box


def test_a_higher_threshold_keeps_what_detecting_at_it_finds(detection, group_photo):
    """The benchmark detects once at the lowest score and filters: the same boxes."""
    from skagegender.embedding import load_image

    image = load_image(group_photo)
    for side in (640, 0):
        low = detection.detect(image, side, 0.3)
        for score in (0.5, 0.91):
            assert detection.detect(image, side, score) == [d for d in low if d[0] >= score]
    assert 0 < len([d for d in low if d[0] >= 0.91]) < len(low) == 6  # the filter bites


def test_the_retry_setting_is_the_packages_det_retry_side(detection, fgnet_pair, group_photo):
    """``S>640`` in the tables, built from two single-scale runs, is what the package does."""
    from skagegender.embedding import ArcFaceEmbedder, load_image

    portrait_x4 = detection._scaled(load_image(fgnet_pair[0]), 4.0)
    images = [portrait_x4, load_image(group_photo), np.zeros((900, 1400, 3), np.uint8)]
    embedder = ArcFaceEmbedder(min_score=0.7, det_max_side=1280, det_retry_side=640,
                               color="bgr")
    counts = []
    for image in images:
        row = {"detections": {str(s): detection.detect(image, s, 0.4) for s in (1280, 640)}}
        expected = sorted(detection.dets_at(row, "1280>640", 0.7), key=lambda d: -d[0])
        faces = embedder.detect_faces(image)
        assert [[round(f.score, 4), *(round(float(v), 1) for v in f.box)] for f in faces] == [
            [d[0], *d[2:]] for d in expected]
        counts.append((len(detection.dets_at(row, "1280", 0.7)), len(faces)))
    # the portrait's face is found by the retry only; the blank image retries and finds none
    assert counts == [(0, 1), (6, 6), (0, 0)]


def _link(files, folder):
    folder.mkdir(parents=True)
    for path in files:
        (folder / path.name).symlink_to(path)


@pytest.mark.slow
def test_detection_benchmark_runs_end_to_end_on_tiny_data(detection, shared_data, group_photo,
                                                          tmp_path):
    data = tmp_path / "data"
    utk = sorted((shared_data / "UTKFace").glob("*.jpg"))
    _link(utk[100:3000:1000], data / "UTKFace")
    _link([shared_data / "FGNET" / "images" / n for n in ("001A02.JPG", "002A29.JPG")],
          data / "FGNET" / "images")
    out = tmp_path / "results"
    detection.main(["--data", str(data), "--limit", "2", "--sides", "640,1024",
                    "--scores", "0.5,0.6,0.8", "--repeats", "1", "--no-sweep",
                    "--out-dir", str(out)])
    report = json.loads((out / "detection.json").read_text())
    results = report["results"]
    assert [len(results["face_sets"][n]) for n in ("UTKFace", "FG-NET", "FG-NET x4")] == [2, 2, 2]
    assert [r["name"] for r in results["no_face"]] == ["binary_blobs", "brick"]
    table = report["table"]
    assert set(table) == {f"{s}@{t}" for s in ("640", "1024", "1024>640", "1024+640")
                          for t in (0.5, 0.6, 0.8)}
    current = table["1024@0.6"]
    assert current["face_sets"]["UTKFace"] == {"n": 2, "found": 1.0, "multi": 0.0, "extra": 0}
    assert current["face_sets"]["FG-NET"]["found"] == 1.0
    assert current["groups"]["t1 1280x886"] == {"faces": 6, "found": 6, "matched": 6,
                                                "extra": 0}
    assert current["groups"]["t1 6000x4000"]["matched"] == 6
    mosaic = current["groups"][detection.MOSAIC]
    assert mosaic["faces"] == 96 and mosaic["matched"] >= 90
    # fewer boxes pass a higher threshold, never more
    for side in ("640", "1024"):
        found = [sum(g["found"] for g in table[f"{side}@{t}"]["groups"].values())
                 for t in (0.5, 0.6, 0.8)]
        assert found == sorted(found, reverse=True)
    # the 1280 px photo is never downscaled at 1024 or above: same boxes as at full size
    (t1,) = [r for r in results["groups"] if r["name"] == "t1 1280x886"]
    assert t1["shape"] == [886, 1280] and len(t1["truth"]) == 6
    timing = report["timing"]["t1 6000x4000"]
    assert set(timing) == {"640", "1024"} and all(t["cpu_ms"] > 0 for t in timing.values())
    rec = report["recommendation"]
    assert f"{rec['side']}@{rec['score']}" in table
    text = (out / "detection.md").read_text()
    assert "## Recommendation" in text and "## Group photo" in text
    assert "| 1024>640 |" in text and "t1 6000x4000" in text
    # --report-only rebuilds the same summaries and tables from the stored detections
    (out / "detection.md").write_text("")
    again = detection.main(["--report-only", "--out-dir", str(out)])
    assert (out / "detection.md").read_text() == text
    assert again["table"] == table and again["recommendation"] == rec
