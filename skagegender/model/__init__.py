"""The image-to-age-and-gender model and its safe file format.

:class:`AgeGenderModel` joins an embedder and two heads; :func:`save_model_file` /
:func:`load_model_file` write and read model files that load without running
code chosen by the file, within size caps (:data:`MAX_MODEL_BYTES`);
:func:`predict_stream` predicts many photos in order (workers, a face cache) and
:func:`annotate_image` draws the faces found on a copy of a photo.
"""

from ._age_gender import AgeGenderModel
from ._annotate import annotate_image, annotation_targets
from ._evaluate import evaluate_model, has_intervals
from ._persistence import (
    DEFAULT_TRUSTED_TYPES,
    MAX_MODEL_BYTES,
    BackboneMismatchError,
    ModelFileError,
    load_model_file,
    save_model_file,
)
from ._stream import PREDICT_CHUNK, predict_stream

__all__ = [
    "DEFAULT_TRUSTED_TYPES",
    "MAX_MODEL_BYTES",
    "PREDICT_CHUNK",
    "AgeGenderModel",
    "BackboneMismatchError",
    "ModelFileError",
    "annotate_image",
    "annotation_targets",
    "evaluate_model",
    "has_intervals",
    "load_model_file",
    "predict_stream",
    "save_model_file",
]
