"""The model file: fitted estimators that load without running code chosen by the file.

A model file is a zip archive with two members:

- ``estimators.skops``: a dict of named estimators, written with
  :func:`skops.io.dumps`: a zip archive of ``schema.json`` (a tree of nodes,
  each describing one object) and one ``.npy`` member per array.
- ``meta.json``: the format version, the skagegender version that wrote the
  file, the backbone the estimators were fitted on (name, sha256 of its
  weights, options), the names of the estimators, the sha256 of
  ``estimators.skops`` and a sha256 of the rest of ``meta.json``.

The checksums catch corrupted or hand-edited files. They are not a
signature: someone who rewrites a file can recompute them. Safety against
malicious files comes from :func:`load_model_file`, which does not hand the
payload to :func:`skops.io.loads` but reads the node tree itself:

- Only the node kinds that fitted heads need are allowed: dicts, lists,
  tuples, JSON values, numpy arrays (read with pickles refused), types used as
  dict key types, random states, default dicts, and objects rebuilt from
  their attribute dict (``cls.__new__`` plus ``__setstate__``). Kinds that call
  a function or a constructor with arguments from the file (skops's
  ``ConstructorFromReduceNode``, ``ReduceNode``, ``FunctionNode``,
  ``MethodNode``, ``PartialNode``, ...) are refused, and so is any node whose
  class is not the plain container its kind builds (a ``ListNode`` naming
  another class would call that class with the list).
- Objects are only rebuilt for trusted classes: the public scikit-learn
  estimators, :data:`DEFAULT_TRUSTED_TYPES`, classes defined under
  :data:`TRUSTED_MODULE_PREFIXES`, and those passed as ``trusted``; and their
  attributes may not be named like one of their methods.
- The whole tree is checked, and every array's header checked against its
  data, before any object is built. A LightGBM booster's model text is
  checked tree by tree (LightGBM's C++ code trusts it; see
  :mod:`skagegender.model._booster`).
- Thread and process counts (``n_jobs``, LightGBM's ``num_threads``) are not
  taken from the file: rebuilt estimators get the default, None.
- Sizes are capped (see :data:`MAX_MODEL_BYTES`): the file, the declared
  *and* the actual decompressed size of every member of both zip archives,
  the zip directories, the schema, and the total size of the arrays built.
- Special files (FIFOs, devices), encrypted members, compression methods other
  than stored and deflated, and member names given twice are refused.

Every failure is a :class:`ModelFileError` that names the file and the reason.
"""


import hashlib
import json
import zipfile
from pathlib import Path

from .._utils import NotRegularFileError, atomic_write, open_regular_file
from ._payload import (
    _MAX_META_BYTES,
    _META,
    _PAYLOAD,
    DEFAULT_TRUSTED_TYPES,
    TRUSTED_MODULE_PREFIXES,
    _open_zip,
    _PayloadTree,
    _read_member,
    _Refused,
    _zip_members,
)

__all__ = [
    "DEFAULT_TRUSTED_TYPES",
    "FORMAT_VERSION",
    "MAX_MODEL_BYTES",
    "TRUSTED_MODULE_PREFIXES",
    "BackboneMismatchError",
    "ModelFileError",
    "load_model_file",
    "save_model_file",
]

#: Version of the model file layout written by :func:`save_model_file`.
FORMAT_VERSION = 1

#: Default cap, in bytes, of what :func:`load_model_file` reads: the model file
#: itself, the decompressed ``estimators.skops`` and the members inside it
#: (together), and the arrays built from them (together). 128 MiB: the shipped
#: model file is 1.6 MB, and a model with large LightGBM or MLP heads stays
#: far below. Pass ``max_bytes`` to load a larger file you trust.
MAX_MODEL_BYTES = 128 << 20

_WRITTEN_KEYS = ("format_version", "skagegender_version", "estimator_names", "payload_sha256")


class ModelFileError(ValueError):
    """A model file is not a valid, untampered skagegender model file.

    Raised by :func:`load_model_file` (and :meth:`AgeGenderModel.load`) for a
    file that is not a model file, is damaged or too large, was written by a
    newer format, fails a checksum, or holds a node kind or type that is not
    allowed. The message names the file and the reason.
    """


class BackboneMismatchError(ModelFileError):
    """A model file was fitted on another backbone than the one expected.

    Its estimators would take the features of that other backbone and return
    meaningless ages and genders, so :func:`load_model_file` refuses it.
    """



def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _canonical(meta):
    """Bytes of ``meta`` that do not depend on key order or whitespace."""
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _backbone_spec(backbone):
    """The BackboneSpec of a ``meta["backbone"]`` entry (a spec or its dict form), checked."""
    from ..embedding import BackboneSpec

    if isinstance(backbone, BackboneSpec):
        return backbone
    return BackboneSpec.from_dict(backbone)


def save_model_file(path, estimators, meta):
    """Write fitted estimators and their metadata to one model file, atomically.

    The file is written to a temporary file in the same folder and then
    moved over ``path``, so a reader never sees a half-written file and a
    failed write leaves an existing file untouched.

    Parameters
    ----------
    path : str or path-like
        Where to write the file (any extension; ``.skag`` by convention).
    estimators : dict of str to object
        The fitted estimators, e.g. ``{"age": age_head, "gender": gender_head}``.
        Anything skops can write; types outside :data:`DEFAULT_TRUSTED_TYPES`
        and skops's defaults must be passed as ``trusted`` when loading.
    meta : dict
        JSON-serialisable metadata. Must hold ``"backbone"``: a
        :class:`~skagegender.embedding.BackboneSpec`, or its dict form
        (:meth:`~skagegender.embedding.BackboneSpec.to_dict`: ``"name"``, ``"sha256"``
        of the backbone's weights and ``"options"``, e.g. which
        layers are pooled). The keys ``format_version``,
        ``skagegender_version``, ``estimator_names``, ``payload_sha256`` and
        ``meta_sha256`` are written by this function and replace any value
        given.

    Returns
    -------
    path : pathlib.Path
        The written file.

    Raises
    ------
    ValueError
        If ``estimators`` is not a non-empty dict with str keys, holds objects
        that :func:`load_model_file` would refuse whatever it trusts (skops
        writes them with node kinds that call code, e.g. the trees of
        scikit-learn's tree ensembles), or ``meta`` lacks a valid ``backbone``
        or is not JSON-serialisable.

    See Also
    --------
    load_model_file : Read the file back, checking it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from sklearn.linear_model import Ridge
    >>> from skagegender.model._persistence import save_model_file, load_model_file
    >>> backbone = {"name": "sface", "sha256": "0" * 64, "options": {"mirror": True}}
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.skag"
    >>> _ = save_model_file(path, {"age": Ridge().fit([[0.0], [1.0]], [20.0, 40.0])},
    ...                     {"backbone": backbone})
    >>> estimators, meta = load_model_file(path, expected_backbone=backbone)
    >>> estimators["age"].predict([[0.5]]), meta["estimator_names"]
    (array([30.]), ['age'])
    """
    import skops.io

    from skagegender import __version__

    if not isinstance(estimators, dict) or not estimators:
        raise ValueError(f"estimators must be a non-empty dict, got {type(estimators).__name__}")
    bad_keys = [k for k in estimators if not isinstance(k, str)]
    if bad_keys:
        raise ValueError(f"estimators' keys must be str, got {bad_keys!r}")
    if not isinstance(meta, dict) or "backbone" not in meta:
        raise ValueError("meta must be a dict with a 'backbone' entry")
    meta = {**meta, "backbone": _backbone_spec(meta["backbone"]).to_dict()}

    payload = skops.io.dumps(dict(estimators))
    try:  # a file that load_model_file would refuse is not written
        _PayloadTree(payload, trusted=None, max_bytes=len(payload), check_types=False)
    except _Refused as exc:
        raise ValueError(
            f"these estimators cannot be written to a model file that loads safely: {exc}"
        ) from None
    meta = {k: v for k, v in meta.items() if k != "meta_sha256"}
    meta.update(
        format_version=FORMAT_VERSION,
        skagegender_version=__version__,
        estimator_names=sorted(estimators),
        payload_sha256=_sha256(payload),
    )
    try:
        meta["meta_sha256"] = _sha256(_canonical(meta))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta must be JSON-serialisable (no NaN or infinity): {exc}") from exc
    meta_bytes = json.dumps(meta, sort_keys=True, indent=2, allow_nan=False).encode()

    def write(file):
        with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr(_META, meta_bytes)
            archive.writestr(_PAYLOAD, payload)

    return atomic_write(path, write)


def load_model_file(path, *, trusted=None, expected_backbone=None, max_bytes=MAX_MODEL_BYTES):
    """Read a model file written by :func:`save_model_file`, checking it first.

    Before any estimator is built, the file must be a regular file and a zip
    archive within the size caps, be a model file of a known format version,
    match both checksums and ``expected_backbone``, and its whole node tree
    must pass the checks described in this module's docstring: allowed node
    kinds only, and objects only of trusted classes (in
    :data:`DEFAULT_TRUSTED_TYPES`, the public scikit-learn estimators,
    ``trusted``, or a class defined under :data:`TRUSTED_MODULE_PREFIXES`).

    Parameters
    ----------
    path : str or path-like
        The model file.
    trusted : sequence of str, default=None
        Extra fully qualified class names to trust (e.g.
        ``"sklearn.neighbors._kd_tree.KDTree"``), as the refusal message spells
        them. Only list classes whose code you trust.
    expected_backbone : BackboneSpec, dict or None, default=None
        A :class:`~skagegender.embedding.BackboneSpec` that must equal the
        file's, or a dict with any of the keys ``"name"``, ``"sha256"``,
        ``"options"``, each of which must equal the file's
        ``meta["backbone"]`` entry. None skips the check.
    max_bytes : int, default=MAX_MODEL_BYTES
        Cap of the file's size, of the decompressed payload and the members
        inside it (together), and of the arrays built from it (together).

    Returns
    -------
    estimators : dict of str to object
        The estimators as saved.
    meta : dict
        The metadata as saved, including the keys written by
        :func:`save_model_file`.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    BackboneMismatchError
        If the file's backbone differs from ``expected_backbone``.
    ModelFileError
        If the file is not a regular file or not a model file, is damaged or
        over a size cap, has an unknown format version, fails a checksum, or
        holds a node kind or an untrusted type (the message lists them).

    See Also
    --------
    save_model_file : Write a model file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from sklearn.linear_model import Ridge
    >>> from skagegender.model._persistence import (
    ...     BackboneMismatchError, load_model_file, save_model_file)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.skag"
    >>> meta = {"backbone": {"name": "sface", "sha256": "0" * 64, "options": {}}}
    >>> _ = save_model_file(path, {"age": Ridge().fit([[0.0], [1.0]], [20.0, 40.0])}, meta)
    >>> try:
    ...     load_model_file(path, expected_backbone={"name": "arcface_r50"})
    ... except BackboneMismatchError as exc:
    ...     print(exc)  # doctest: +ELLIPSIS
    model file ... was fitted on backbone name 'sface', expected 'arcface_r50'...
    """
    path = Path(path)
    try:
        data = _read_regular_file(path, max_bytes)
        with _open_zip(data, "the file") as archive:
            infos = _zip_members(archive, "the file")
            if set(infos) != {_META, _PAYLOAD}:
                raise _Refused(
                    f"is not a skagegender model file: expected exactly the members "
                    f"{[_META, _PAYLOAD]}, found {sorted(infos)}"
                )
            meta_bytes = _read_member(archive, infos[_META], _MAX_META_BYTES, "the file")
            payload = _read_member(archive, infos[_PAYLOAD], max_bytes, "the file")
        del data
        meta = _read_meta(meta_bytes, payload)
        if expected_backbone is not None:
            difference = _backbone_spec(meta["backbone"]).mismatch(expected_backbone)
            if difference is not None:
                key, stored, expected = difference
                raise BackboneMismatchError(
                    f"model file {str(path)!r} was fitted on backbone {key} {stored!r}, "
                    f"expected {expected!r}; its estimators expect that backbone's "
                    "features and would give meaningless predictions on others"
                )
        tree = _PayloadTree(payload, trusted=trusted, max_bytes=max_bytes)
        estimators = tree.build()
    except _Refused as exc:
        raise ModelFileError(f"{str(path)!r}: {exc}") from None
    if not isinstance(estimators, dict) or sorted(estimators) != meta["estimator_names"]:
        raise ModelFileError(
            f"{str(path)!r}: the estimators do not match meta['estimator_names'] "
            f"{meta['estimator_names']}"
        )
    return estimators, meta


# -- reading the file and its metadata ------------------------------------------


def _read_regular_file(path, max_bytes):
    """The bytes of ``path``, a regular file of at most ``max_bytes`` bytes."""
    try:
        file, info = open_regular_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no model file at {str(path)!r}") from None
    except NotRegularFileError:
        raise _Refused("is not a regular file (a folder, device, FIFO or socket)") from None
    except OSError as exc:
        raise _Refused(f"cannot be opened ({exc.strerror})") from None
    with file:
        if info.st_size > max_bytes:
            raise _Refused(
                f"is {info.st_size:,} bytes, over the model file cap of {max_bytes:,} bytes "
                "(load_model_file(..., max_bytes=...) raises it for a file you trust)"
            )
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _Refused(f"grew over the model file cap of {max_bytes:,} bytes while read")
    return data


def _read_meta(meta_bytes, payload):
    """Parse and check meta.json against itself and the payload."""
    try:
        meta = json.loads(meta_bytes)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _Refused(f"{_META} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or not all(k in meta for k in (*_WRITTEN_KEYS, "meta_sha256")):
        raise _Refused(f"{_META} lacks the keys of a model file")
    version = meta["format_version"]
    if type(version) is not int or version < 1:
        raise _Refused(f"invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise _Refused(
            f"uses model file format {version}, written by skagegender "
            f"{meta.get('skagegender_version')!r}; this skagegender reads up to format "
            f"{FORMAT_VERSION}. Upgrade skagegender to load it."
        )
    stored = meta.pop("meta_sha256")
    try:
        actual = _sha256(_canonical(meta))
    except (TypeError, ValueError):  # NaN or infinity: json.loads accepts them
        actual = None
    if actual != stored:
        raise _Refused(
            f"{_META} does not match its checksum; the file was changed after it was written"
        )
    meta["meta_sha256"] = stored
    if _sha256(payload) != meta["payload_sha256"]:
        raise _Refused(
            f"{_PAYLOAD} does not match the checksum in {_META}; the file was changed or "
            "damaged after it was written"
        )
    names = meta["estimator_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _Refused(f"meta['estimator_names'] is not a list of names: {names!r}")
    try:
        _backbone_spec(meta.get("backbone"))
    except ValueError as exc:
        raise _Refused(str(exc)) from None
    return meta

