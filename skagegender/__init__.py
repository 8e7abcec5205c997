"""Age and gender estimation from face photos, the scikit-learn way.

The package is organised by architecture:

- :mod:`skagegender.embedding`: images in, one face feature vector per image out
  (:class:`~skagegender.embedding.ArcFaceEmbedder`).
- :mod:`skagegender.heads`: estimators that turn features into age and gender.
- :mod:`skagegender.metrics`: one-class-off accuracy, cumulative score, scorers.
- :mod:`skagegender.model_selection`: subject-disjoint splits and head search.
- :mod:`skagegender.datasets`: loaders for IMDB-WIKI, UTKFace, Adience, MORPH-II, FG-NET.
- :mod:`skagegender.model`: the image-to-age/gender model and its safe file format.
- :mod:`skagegender.pretrained`: the model shipped with the package.

Importing :mod:`skagegender` is cheap: subpackages load on first attribute access,
and heavy dependencies (onnxruntime, lightgbm, optuna) load only when used.
"""

import importlib

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "datasets",
    "embedding",
    "heads",
    "metrics",
    "model",
    "model_selection",
    "pretrained",
]

_SUBPACKAGES = frozenset(__all__) - {"__version__"}


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
