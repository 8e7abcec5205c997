"""The library's streaming prediction and annotated copies, as Python users call them."""

import os

import pytest
from PIL import Image

from skagegender.embedding import FaceCache, item_key
from skagegender.model import annotate_image, annotation_targets, predict_stream


@pytest.fixture(scope="module")
def fast_model():
    from skagegender.pretrained import load

    return load("fast")


@pytest.mark.slow
def test_predict_stream_gives_records_in_input_order_with_cache_and_copies(
        fast_model, portrait, group_photo, tmp_path):
    missing = str(tmp_path / "missing.jpg")
    items = [group_photo, (str(tmp_path / "empty"), "no image files in this folder"),
             missing, portrait]
    cache, copies = tmp_path / "cache", tmp_path / "copies"
    copies.mkdir()
    first = list(predict_stream(fast_model, items, cache=cache, annotate_dir=copies))
    assert [r["path"] for r in first] == [group_photo, str(tmp_path / "empty"), missing,
                                          portrait]
    assert first[1] == {"path": str(tmp_path / "empty"), "faces": [],
                        "error": "no image files in this folder"}
    assert first[2]["faces"] == [] and first[2]["error"] and "annotated" not in first[2]
    # the inputs went through the networks and heads together: the same records as one
    # image at a time
    assert first[3]["faces"] == fast_model.predict_faces(portrait, coverage=0.8)
    assert first[0]["faces"] == fast_model.predict_faces(group_photo, coverage=0.8)
    assert len(first[0]["faces"]) == 6
    for record in (first[0], first[3]):
        assert record["error"] is None
        with Image.open(record["annotated"]) as copy, Image.open(record["path"]) as photo:
            assert copy.size == photo.size
    # every face is in the cache, and a second run reads it (same records)
    store = FaceCache(cache, fast_model.embedder_)
    keys = [item_key(group_photo), item_key(portrait)]
    stored = store.get(keys)
    store.close()
    assert [len(stored[key]) for key in keys] == [6, 1]
    second = list(predict_stream(fast_model, items, cache=cache, annotate_dir=copies,
                                 overwrite=True))
    assert [r["faces"] for r in second] == [r["faces"] for r in first]
    # without overwrite an existing copy is kept and the input says why
    third = list(predict_stream(fast_model, [portrait], annotate_dir=copies))
    assert "it exists" in third[0]["error"]


@pytest.mark.slow
def test_annotate_image_never_writes_through_a_link(fast_model, portrait, tmp_path):
    records = fast_model.predict_faces(portrait)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    [target] = annotation_targets([(portrait, None)], tmp_path)
    os.symlink(victim, target)
    for overwrite in (False, True):
        error = annotate_image(fast_model, portrait, records, target, overwrite=overwrite)
        assert error is not None and str(target) in error
    assert victim.read_text() == "keep" and os.path.islink(target)


def test_annotation_targets_are_unique_and_never_an_input(tmp_path):
    a, b = tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg"
    inputs = [(str(a), None), (str(b), None), (str(tmp_path / "c.pgm"), None),
              (str(tmp_path / "bad"), "unreadable"), (str(tmp_path / "out" / "x.jpg"), None)]
    targets = annotation_targets(inputs, tmp_path / "out")
    out = str(tmp_path / "out")
    assert targets[:3] == [f"{out}/x-2.jpg", f"{out}/x-3.jpg", f"{out}/c.ppm"]
    assert targets[3] is None and targets[4] == f"{out}/x-4.jpg"
    assert annotation_targets(inputs, None) == [None] * 5
