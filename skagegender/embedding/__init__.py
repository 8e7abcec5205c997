"""Images in, face features out.

:class:`ArcFaceEmbedder` is the scikit-learn transformer; :func:`load_image` is the
image reader every part of skagegender uses. :func:`feature_blocks` says where
each named block sits in the features, :meth:`ArcFaceEmbedder.align` and
:func:`sface_maps` give the aligned faces and SFace's activation maps, and
:func:`sface_weights` SFace's weights (to train a layer on them),
:class:`FineTunedWeights` a trained layer's checked numbers (run with
``ArcFaceEmbedder(finetuned_weights=...)``), :data:`COMPACT` the compact network
(``layers=("compact",)``) and :func:`shrink_crop` the crop it reads, :class:`Outcome` what happened to
each image and :class:`BackboneSpec` which backbone made a row. :func:`runtime_name`
says which engine runs the networks (OpenVINO or onnxruntime, ``$SKAGEGENDER_RUNTIME``).
Heavy dependencies (onnx, onnxruntime, openvino, insightface) load on first use, not on
import.
"""

from ._assets import SFACE, converted_model
from ._backbones import (
    AGE_GENDER_LAYERS,
    LAYER_PRESETS,
    SFACE_MAP_LAYER,
    feature_blocks,
    resolve_layers,
    sface_maps,
    sface_weights,
)
from ._cache import EmbeddingCache, item_key
from ._chipnets import (
    COMPACT,
    COMPACT_AGE_CLASSES,
    COMPACT_EMBEDDING_WIDTH,
    DLIB_AGE_CLASSES,
    shrink_crop,
)
from ._detection import ALIGNED_SIZE, ARCFACE_TEMPLATE, Face, align_face
from ._embedder import ArcFaceEmbedder, MissingFacesWarning, NoFaceError
from ._face_cache import CACHED_FACES_LIMIT, FaceCache
from ._finetuned import FINETUNED_AGE_CLASSES, FINETUNED_WEIGHT_ARRAYS, FineTunedWeights
from ._io import IMAGE_FORMATS, IMAGE_SUFFIXES, ImageLoadError, frames_note, load_image
from ._outcome import AlignedFaces, EmbeddingResult, Outcome
from ._runtime import RUNTIMES, runtime_name
from ._spec import BackboneSpec

__all__ = [
    "AGE_GENDER_LAYERS",
    "ALIGNED_SIZE",
    "ARCFACE_TEMPLATE",
    "CACHED_FACES_LIMIT",
    "COMPACT",
    "COMPACT_AGE_CLASSES",
    "COMPACT_EMBEDDING_WIDTH",
    "DLIB_AGE_CLASSES",
    "FINETUNED_AGE_CLASSES",
    "FINETUNED_WEIGHT_ARRAYS",
    "IMAGE_FORMATS",
    "IMAGE_SUFFIXES",
    "LAYER_PRESETS",
    "RUNTIMES",
    "SFACE",
    "SFACE_MAP_LAYER",
    "AlignedFaces",
    "ArcFaceEmbedder",
    "BackboneSpec",
    "EmbeddingCache",
    "EmbeddingResult",
    "Face",
    "FaceCache",
    "FineTunedWeights",
    "ImageLoadError",
    "MissingFacesWarning",
    "NoFaceError",
    "Outcome",
    "align_face",
    "converted_model",
    "feature_blocks",
    "frames_note",
    "item_key",
    "load_image",
    "resolve_layers",
    "runtime_name",
    "sface_maps",
    "sface_weights",
    "shrink_crop",
]
