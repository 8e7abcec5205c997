"""How the shipped ``"fast"`` model is made: features and heads.

The fast model runs no SFace pass: YuNet finds the face and only the two CC0
dlib chip networks (age: ResNet-10 on a 64 x 64 chip, 81 age classes; gender:
32 x 32 chip) are run on it (``ArcFaceEmbedder(layers=("dlib_age",
"dlib_gender"), identity=False)``, 83 features). Its heads are trained on UTKFace
(and degraded copies, as the default recipe does), never on FG-NET, so FG-NET
stays a cross-dataset test. ``scripts/train_fast.py`` trains, measures (5-fold CV
on UTKFace, FG-NET) and writes ``skagegender/pretrained/fast.skag``.
"""


#: Embedder options of the fast model (83 features: 81 dlib age probabilities,
#: then P(female), P(male) of the dlib gender network).
EMBEDDER_PARAMS = {"layers": ("dlib_age", "dlib_gender"), "identity": False}
#: Weight of the dlib age network's own expected age in the age blend; an MLP
#: trained on UTKFace has the rest. Chosen by ``scripts/train_fast.py`` on the
#: UTKFace folds with the one-standard-error rule (the largest weight whose MAE is
#: within one standard error of the best; the numbers are in MODEL_CARD.md). 1.0: no
#: age part is learned from UTKFace.
EXPECTED_AGE_WEIGHT = 1.0


def make_embedder(**overrides):
    """The fast model's embedder (``overrides``: n_jobs, cache, batch_size ...)."""
    from ..embedding import ArcFaceEmbedder

    return ArcFaceEmbedder(**{**EMBEDDER_PARAMS, **overrides})


def make_heads(random_state=0, expected_weight=EXPECTED_AGE_WEIGHT):
    """Unfitted (age, gender) heads of the fast model.

    Age: a weighted mean (:class:`~sklearn.ensemble.VotingRegressor`) of the dlib
    network's expected age and an MLP trained on the 83 features; with
    ``expected_weight=1`` the expected age alone. Gender: an MLP on the 83
    features.
    """
    from sklearn.ensemble import VotingRegressor

    from ..embedding import DLIB_AGE_CLASSES
    from ..heads import AgeRegressor, ExpectedAgeRegressor, GenderClassifier

    expected = ExpectedAgeRegressor(start=0, class_ages=DLIB_AGE_CLASSES)
    if expected_weight == 1:
        age = expected
    else:
        age = VotingRegressor(
            [("dlib", expected), ("mlp", AgeRegressor(head="mlp", random_state=random_state))],
            weights=[expected_weight, 1 - expected_weight])
    return (AgeRegressor(head=age, random_state=random_state),
            GenderClassifier(head="mlp", random_state=random_state))
