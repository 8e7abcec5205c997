"""The embedder's advice holds: for age, layers="age-gender" beats the identity default."""

import numpy as np
import pytest
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skagegender import ArcFaceEmbedder, one_class_off_score


def test_the_docstring_names_the_choice():
    doc = " ".join(ArcFaceEmbedder.__doc__.split())
    assert 'For age and gender, pass** ``layers="age-gender"``' in doc
    assert ArcFaceEmbedder().get_params()["layers"] is None  # identity alone by default


@pytest.mark.slow
@pytest.mark.shared_data
def test_age_gender_layers_score_better_than_the_identity_default(shared_data):
    from skagegender.datasets import load_utkface

    data = load_utkface(shared_data / "UTKFace")
    pick = np.random.default_rng(0).choice(len(data.paths), size=100, replace=False)
    paths = [data.paths[i] for i in pick]
    X = ArcFaceEmbedder(layers="age-gender").transform(paths)
    identity = ArcFaceEmbedder().transform(paths[:10])
    np.testing.assert_allclose(X[:10, :128], identity, atol=1e-4)  # identity comes first
    age = data.age[pick]
    cv = KFold(3, shuffle=True, random_state=0)
    head = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 4, 12)))
    with_layers = cross_val_score(head, X, age, cv=cv, scoring=one_class_off_score).mean()
    identity_only = cross_val_score(head, X[:, :128], age, cv=cv,
                                    scoring=one_class_off_score).mean()
    assert with_layers > identity_only + 0.05, (with_layers, identity_only)
