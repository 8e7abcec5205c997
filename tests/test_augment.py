"""degrade_photo: seeded, shape-preserving, and actually degrading."""

import numpy as np

from skagegender.embedding import load_image
from skagegender.training import degrade_photo


def test_seeded_and_shape_preserving(portrait):
    image = load_image(portrait)
    a = degrade_photo(image, random_state=3)
    assert a.shape == image.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, degrade_photo(image, random_state=3))
    copies = [degrade_photo(image, random_state=s) for s in range(30)]
    assert len({c.tobytes() for c in copies}) == 30
    # on average the copies lose fine detail: less high-frequency energy than the original
    def detail(img):
        g = img.astype(float).mean(axis=2)
        return np.abs(np.diff(g, axis=1)).mean()
    assert np.mean([detail(c) for c in copies]) < detail(image)
    # some copies are grayscale (all channels equal)
    assert any((c[..., 0] == c[..., 1]).mean() > 0.9 for c in copies)


def test_degraded_face_is_still_the_same_face(portrait):
    from skagegender.embedding import ArcFaceEmbedder

    image = load_image(portrait)
    embedder = ArcFaceEmbedder(color="bgr")
    rows = embedder.transform([image] + [degrade_photo(image, random_state=s) for s in range(4)])
    assert not np.isnan(rows).any()
    cos = rows[1:] @ rows[0]
    assert (cos > 0.5).all()
