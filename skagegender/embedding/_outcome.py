"""What happened to one image (embedded, no face found, or not readable), and to a batch."""

from dataclasses import dataclass

import numpy as np

#: The kinds of :class:`Outcome`.
OUTCOME_KINDS = ("ok", "no_face", "load_error")


@dataclass(frozen=True)
class Outcome:
    """What happened to one image of a batch.

    Parameters
    ----------
    kind : {"ok", "no_face", "load_error"}
        ``"ok"``: a face was found (and embedded or aligned); ``"no_face"``: the
        image was read but no face passed the embedder's face policy;
        ``"load_error"``: the image could not be read (see
        :class:`~skagegender.embedding.ImageLoadError`).
    message : str, default=""
        For humans: names the item and says why (empty for ``"ok"``).
    transient : bool, default=False
        A load error that may change while the file does not (permission
        denied, I/O error); such outcomes are never stored in an embedding
        cache.

    Examples
    --------
    >>> from skagegender.embedding import Outcome
    >>> Outcome("no_face", "photo.jpg: no face found").ok
    False
    """

    kind: str
    message: str = ""
    transient: bool = False

    def __post_init__(self):
        if self.kind not in OUTCOME_KINDS:
            raise ValueError(f"Outcome kind must be one of {OUTCOME_KINDS}, got {self.kind!r}")
        if not isinstance(self.message, str):
            raise TypeError(f"Outcome message must be a str, got {type(self.message).__name__}")
        if self.kind != "ok" and not self.message:
            raise ValueError(f"An Outcome of kind {self.kind!r} needs a message")

    @property
    def ok(self):
        """True when a face was found."""
        return self.kind == "ok"

    @property
    def error(self):
        """The message, or None for ``"ok"`` (the old ``errors`` entries)."""
        return None if self.ok else self.message

    @classmethod
    def no_face(cls, source):
        """The outcome of a readable image without a face; ``source`` names it."""
        return cls("no_face", f"{source}: no face found")

    @classmethod
    def load_error(cls, exc):
        """The outcome of an :class:`~skagegender.embedding.ImageLoadError`."""
        return cls("load_error", str(exc), transient=bool(getattr(exc, "transient", False)))


#: The outcome of an embedded image.
OK = Outcome("ok")


@dataclass
class EmbeddingResult:
    """What :meth:`ArcFaceEmbedder.embed` found for a batch of images.

    Attributes
    ----------
    features : ndarray of shape (n_images, n_features), float32
        One row per image; all-NaN where no face was embedded.
    faces : list of Face or None
        The selected face of each image (box, score, landmarks, embedding), or None.
    outcomes : list of Outcome
        What happened to each image: ``kind`` "ok", "no_face" or "load_error",
        and a message naming the item.
    """

    features: np.ndarray
    faces: list
    outcomes: list

    @property
    def found(self):
        """Boolean mask of shape (n_images,): True where a face was embedded."""
        return np.array([o.ok for o in self.outcomes], dtype=bool)

    @property
    def errors(self):
        """Per image, the outcome's message, or None where a face was embedded."""
        return [o.error for o in self.outcomes]


@dataclass
class AlignedFaces:
    """What :meth:`ArcFaceEmbedder.align` found for a batch of images.

    Attributes
    ----------
    crops : ndarray of shape (n_images, 112, 112, 3), uint8
        The selected face of each image aligned on the ArcFace template, in the
        embedder's ``color`` order (RGB by default); all zero where no face was found.
    faces : list of Face or None
        The selected face of each image (box, score, landmarks), or None.
    outcomes : list of Outcome
        What happened to each image (as in :class:`EmbeddingResult`).
    """

    crops: np.ndarray
    faces: list
    outcomes: list

    @property
    def found(self):
        """Boolean mask of shape (n_images,): True where a face was aligned."""
        return np.array([o.ok for o in self.outcomes], dtype=bool)
