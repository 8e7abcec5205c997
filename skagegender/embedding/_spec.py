"""BackboneSpec: which backbone, with which options, made a feature row."""

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: Keys of the model-file form (``meta.json``'s ``"backbone"``), see :meth:`BackboneSpec.to_dict`.
SPEC_KEYS = ("name", "sha256", "options")


@dataclass(frozen=True)
class BackboneSpec(Mapping):
    """The identity of a backbone: features of two equal specs mean the same thing.

    :meth:`ArcFaceEmbedder.backbone_info` makes one; model files store it
    (:meth:`to_dict`, read back with :meth:`from_dict`) and refuse to run heads
    behind a backbone whose spec differs; embedding caches key rows by it.

    It also reads as a flat read-only mapping of ``name``, ``weights_sha256``,
    ``licence`` and the options (``spec["layers"]``, ``"identity" in spec``,
    ``dict(spec)``).

    Parameters
    ----------
    name : str
        ``"sface"``, an InsightFace pack name, folder or file.
    weights_sha256 : str
        sha256 (64 lowercase hex digits) of the recognition network's weights.
    options : mapping, default={}
        JSON values of the options that change the features: ``layers``,
        ``flip_augment``, ``embedding_dim``, and, when they apply, ``identity``,
        ``chip_nets_sha256`` and ``finetuned_sha256``.
    licence : str, default=""
        The weights' licence, for people; not part of the identity (not compared,
        not stored in model files).

    Examples
    --------
    >>> from skagegender.embedding import BackboneSpec
    >>> spec = BackboneSpec("sface", "0" * 64, {"layers": [], "embedding_dim": 128})
    >>> BackboneSpec.from_dict(spec.to_dict()) == spec
    True
    >>> spec["embedding_dim"], spec.mismatch({"name": "buffalo_l"})
    (128, ("name", 'sface', 'buffalo_l'))
    """

    name: str
    weights_sha256: str
    options: Mapping = field(default_factory=dict)
    licence: str = field(default="", compare=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            message = f"backbone name must be a non-empty str, got {self.name!r}"
            raise ValueError(message)
        if not isinstance(self.weights_sha256, str) or not _SHA256.match(self.weights_sha256):
            raise ValueError(
                "backbone sha256 must be 64 lowercase hex digits (the sha256 of the backbone's "
                f"weights file), got {self.weights_sha256!r}"
            )
        if not isinstance(self.options, Mapping):
            message = f"backbone options must be a dict, got {self.options!r}"
            raise ValueError(message)  # noqa: TRY004
        if not all(isinstance(k, str) for k in self.options):
            raise ValueError(f"backbone options must have str keys, got {list(self.options)!r}")
        reserved = {"name", "weights_sha256", "licence"} & set(self.options)
        if reserved:
            raise ValueError(f"backbone options may not be named {sorted(reserved)}")
        try:
            json.dumps(dict(self.options), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"backbone options must be JSON values: {exc}") from None
        if not isinstance(self.licence, str):
            message = f"backbone licence must be a str, got {self.licence!r}"
            raise ValueError(message)  # noqa: TRY004
        object.__setattr__(self, "options", MappingProxyType(copy.deepcopy(dict(self.options))))

    # -- the flat read-only mapping -------------------------------------------

    def _flat(self):
        return {"name": self.name, "weights_sha256": self.weights_sha256,
                "licence": self.licence, **self.options}

    def __getitem__(self, key):
        return self._flat()[key]

    def __iter__(self):
        return iter(self._flat())

    def __len__(self):
        return 3 + len(self.options)

    __hash__ = None  # options are a mapping

    def __reduce__(self):  # the read-only options view does not pickle; its dict does
        return type(self), (self.name, self.weights_sha256, dict(self.options), self.licence)

    # -- the model-file form ----------------------------------------------------

    @property
    def embedding_dim(self):
        """Width of the feature rows (``options["embedding_dim"]``), or None."""
        return self.options.get("embedding_dim")

    def to_dict(self):
        """The model-file form: ``{"name", "sha256", "options"}`` (JSON values, no licence)."""
        return {"name": self.name, "sha256": self.weights_sha256,
                "options": copy.deepcopy(dict(self.options))}

    @classmethod
    def from_dict(cls, data):
        """The spec of a model-file form, checked (ValueError when it is not one).

        Parameters
        ----------
        data : dict
            Exactly the keys ``name`` (non-empty str), ``sha256`` (64 lowercase hex
            digits) and ``options`` (dict of JSON values).

        Returns
        -------
        spec : BackboneSpec
        """
        if not isinstance(data, dict) or set(data) != set(SPEC_KEYS):
            raise ValueError(
                f"meta['backbone'] must be a dict with exactly the keys {SPEC_KEYS}, got {data!r}"
            )
        if not isinstance(data["options"], dict):
            message = f"meta['backbone']['options'] must be a dict, got {data['options']!r}"
            raise ValueError(message)  # noqa: TRY004
        try:
            return cls(data["name"], data["sha256"], data["options"])
        except ValueError as exc:
            raise ValueError(f"meta['backbone'] is invalid: {exc}") from None

    def mismatch(self, expected):
        """The first difference from ``expected``, or None when there is none.

        Parameters
        ----------
        expected : BackboneSpec or dict
            A spec, or a model-file form with some of its keys (only those are
            compared).

        Returns
        -------
        difference : None or tuple (key, this value, expected value)
            ``key`` is one of ``"name"``, ``"sha256"``, ``"options"``.
        """
        if isinstance(expected, BackboneSpec):
            expected = expected.to_dict()
        unknown = set(expected) - set(SPEC_KEYS)
        if unknown:
            raise ValueError(
                f"expected backbone has unknown keys {sorted(unknown)}; use {SPEC_KEYS}"
            )
        mine = self.to_dict()
        for key in SPEC_KEYS:
            if key in expected and expected[key] != mine[key]:
                return key, mine[key], expected[key]
        return None
