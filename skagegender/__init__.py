"""Age and gender estimation from face photos, the scikit-learn way.

The main names import from the top level::

    from skagegender import (AgeGenderModel, ArcFaceEmbedder, AgeRegressor,
                             GenderClassifier, one_class_off_score)
    model = skagegender.load()          # the shipped model ("fast" for the small one)

The package is organised by architecture:

- :mod:`skagegender.embedding`: images in, one face feature vector per image out
  (:class:`~skagegender.embedding.ArcFaceEmbedder`).
- :mod:`skagegender.heads`: estimators that turn features into age and gender.
- :mod:`skagegender.metrics`: one-class-off accuracy, cumulative score, scorers, and
  the ``Display`` plots.
- :mod:`skagegender.model_selection`: subject-disjoint splits and head search.
- :mod:`skagegender.datasets`: loaders for IMDB-WIKI, UTKFace, Adience, MORPH-II, FG-NET.
- :mod:`skagegender.model`: the image-to-age/gender model and its safe file format.
- :mod:`skagegender.pretrained`: the model shipped with the package.

Importing :mod:`skagegender` is cheap: subpackages and the top-level names load on
first attribute access, and heavy dependencies (onnxruntime, lightgbm, optuna) load
only when used.
"""

import importlib

__version__ = "0.1.0"

_SUBPACKAGES = frozenset(
    {"datasets", "embedding", "heads", "metrics", "model", "model_selection", "pretrained"}
)

#: Top-level names and the subpackage each comes from (imported on first access).
_NAMES = {
    "AgeGenderModel": "model",
    "ArcFaceEmbedder": "embedding",
    "AgeRegressor": "heads",
    "GenderClassifier": "heads",
    "HeadSearchCV": "model_selection",
    "one_class_off_score": "metrics",
    "exact_class_score": "metrics",
    "cumulative_score": "metrics",
    "mean_absolute_error": "metrics",
    "get_scorer": "metrics",
    "load": "pretrained",
}

__all__ = [  # noqa: RUF022 - subpackages, then names
    "__version__",
    "datasets", "embedding", "heads", "metrics", "model", "model_selection", "pretrained",
    "AgeGenderModel", "AgeRegressor", "ArcFaceEmbedder", "GenderClassifier", "HeadSearchCV",
    "cumulative_score", "exact_class_score", "get_scorer", "load", "mean_absolute_error",
    "one_class_off_score",
]


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
        globals()[name] = value  # later look-ups skip __getattr__
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
