"""What happened to one image: embedded, no face found, or not readable."""

from dataclasses import dataclass

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
