"""Images in, face features out.

:class:`ArcFaceEmbedder` is the scikit-learn transformer; :func:`load_image` is the
image reader every part of skagegender uses. Heavy dependencies (onnx,
onnxruntime, insightface) load on first use, not on import.
"""

from ._backbones import AGE_GENDER_LAYERS, LAYER_PRESETS
from ._cache import EmbeddingCache
from ._detection import ARCFACE_TEMPLATE, Face, align_face
from ._embedder import (
    ArcFaceEmbedder,
    EmbeddingResult,
    MissingFacesWarning,
    NoFaceError,
)
from ._io import IMAGE_FORMATS, IMAGE_SUFFIXES, ImageLoadError, load_image

__all__ = [
    "AGE_GENDER_LAYERS",
    "ARCFACE_TEMPLATE",
    "ArcFaceEmbedder",
    "EmbeddingCache",
    "EmbeddingResult",
    "Face",
    "IMAGE_FORMATS",
    "IMAGE_SUFFIXES",
    "ImageLoadError",
    "LAYER_PRESETS",
    "MissingFacesWarning",
    "NoFaceError",
    "align_face",
    "load_image",
]
