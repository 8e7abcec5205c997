"""The image-to-age-and-gender model and its safe file format.

:class:`AgeGenderModel` joins an embedder and two heads; :func:`save_model_file` /
:func:`load_model_file` write and read model files that load without running
code chosen by the file, within size caps (:data:`MAX_MODEL_BYTES`).
"""

from ._age_gender import AgeGenderModel
from ._evaluate import evaluate_model, has_intervals
from ._persistence import (
    DEFAULT_TRUSTED_TYPES,
    MAX_MODEL_BYTES,
    BackboneMismatchError,
    ModelFileError,
    load_model_file,
    save_model_file,
)

__all__ = [
    "DEFAULT_TRUSTED_TYPES",
    "MAX_MODEL_BYTES",
    "AgeGenderModel",
    "BackboneMismatchError",
    "ModelFileError",
    "evaluate_model",
    "has_intervals",
    "load_model_file",
    "save_model_file",
]
