"""The model file: fitted estimators that load without running arbitrary code.

A model file is a zip archive with two members:

- ``estimators.skops``: a dict of named estimators, written with
  :func:`skops.io.dumps`. skops rebuilds objects from a description of their
  state and refuses any type it is not told to trust, so, unlike pickle,
  loading a file cannot run code chosen by whoever wrote it.
- ``meta.json``: the format version, the skagegender version that wrote the
  file, the backbone the estimators were fitted on (name, sha256 of its
  weights, options), the names of the estimators, the sha256 of
  ``estimators.skops`` and a sha256 of the rest of ``meta.json``.

The checksums catch corrupted or hand-edited files. They are not a
signature: someone who rewrites a file can recompute them. Safety against
malicious files comes from skops's type check, which
:func:`load_model_file` always applies.
"""

import hashlib
import importlib
import inspect
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path

__all__ = [
    "DEFAULT_TRUSTED_TYPES",
    "FORMAT_VERSION",
    "TRUSTED_MODULE_PREFIXES",
    "BackboneMismatchError",
    "ModelFileError",
    "load_model_file",
    "save_model_file",
]

#: Version of the model file layout written by :func:`save_model_file`.
FORMAT_VERSION = 1

#: Types trusted on top of skops's own defaults (which already cover the
#: public scikit-learn estimators, numpy and builtins): the private helper
#: objects that fitted MLPs, calibrated classifiers and histogram gradient
#: boosting hold, the Bunch (a dict) of a fitted VotingRegressor's
#: ``named_estimators_``, and LightGBM's estimators. Extend per call with
#: ``load_model_file(..., trusted=[...])``.
DEFAULT_TRUSTED_TYPES = (
    "collections.OrderedDict",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
    "lightgbm.sklearn.LGBMRegressor",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.utils._bunch.Bunch",
)

#: Classes *defined* in these subpackages of skagegender are trusted too.
#: Only classes qualify, and only those whose ``__module__`` is the module
#: named in the file, so a name that resolves to something a module merely
#: imports (a function, ``os``, ...) is still refused.
TRUSTED_MODULE_PREFIXES = ("skagegender.embedding.", "skagegender.heads.", "skagegender.model.")

_META = "meta.json"
_PAYLOAD = "estimators.skops"
_MAX_META_BYTES = 1 << 20
_WRITTEN_KEYS = ("format_version", "skagegender_version", "estimator_names", "payload_sha256")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_BACKBONE_KEYS = ("name", "sha256", "options")


class ModelFileError(ValueError):
    """A model file is not a valid, untampered skagegender model file.

    Raised by :func:`load_model_file` for a file that is not a model file,
    was written by a newer format, fails a checksum, or holds a type that is
    not trusted.
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


def _check_backbone(backbone):
    if not isinstance(backbone, dict) or set(backbone) != set(_BACKBONE_KEYS):
        raise ValueError(
            f"meta['backbone'] must be a dict with exactly the keys {_BACKBONE_KEYS}, "
            f"got {backbone!r}"
        )
    if not isinstance(backbone["name"], str) or not backbone["name"]:
        raise ValueError(
            f"meta['backbone']['name'] must be a non-empty str, got {backbone['name']!r}"
        )
    if not isinstance(backbone["sha256"], str) or not _SHA256.match(backbone["sha256"]):
        raise ValueError(
            "meta['backbone']['sha256'] must be 64 lowercase hex digits (the sha256 of the "
            f"backbone's weights file), got {backbone['sha256']!r}"
        )
    if not isinstance(backbone["options"], dict):
        raise ValueError(f"meta['backbone']['options'] must be a dict, got {backbone['options']!r}")


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
        JSON-serialisable metadata. Must hold ``"backbone"``: a dict with
        ``"name"`` (str), ``"sha256"`` (64 lowercase hex digits, the
        backbone weights' sha256) and ``"options"`` (dict, e.g. which
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
        If ``estimators`` is not a non-empty dict with str keys, or ``meta``
        lacks a valid ``backbone`` or is not JSON-serialisable.

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
    _check_backbone(meta["backbone"])

    payload = skops.io.dumps(dict(estimators))
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

    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive:
                archive.writestr(_META, meta_bytes)
                archive.writestr(_PAYLOAD, payload)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; match a normally created file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_model_file(path, *, trusted=None, expected_backbone=None):
    """Read a model file written by :func:`save_model_file`, checking it first.

    Before any estimator is built, the file must be a model file of a known
    format version, both checksums must match, the backbone must match
    ``expected_backbone`` and every type in the estimators must be trusted:
    in skops's defaults, in :data:`DEFAULT_TRUSTED_TYPES`, in ``trusted``,
    or a class defined under :data:`TRUSTED_MODULE_PREFIXES`.

    Parameters
    ----------
    path : str or path-like
        The model file.
    trusted : sequence of str, default=None
        Extra fully qualified type names to trust, as
        :func:`skops.io.get_untrusted_types` spells them (e.g.
        ``"sklearn.neighbors._kd_tree.KDTree"``). Only list types whose code
        you trust.
    expected_backbone : dict, default=None
        Any of the keys ``"name"``, ``"sha256"``, ``"options"``; each given
        one must equal the file's ``meta["backbone"]`` entry. None skips the
        check.

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
        If the file is not a model file, has an unknown format version, fails
        a checksum, or holds an untrusted type (the message lists them).

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
    import skops.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {str(path)!r}")
    try:
        with zipfile.ZipFile(path) as archive:
            infos = {info.filename: info for info in archive.infolist()}
            if set(infos) != {_META, _PAYLOAD}:
                raise ModelFileError(
                    f"{str(path)!r} is not a skagegender model file: expected exactly the "
                    f"members {[_META, _PAYLOAD]}, found {sorted(infos)}"
                )
            if infos[_META].file_size > _MAX_META_BYTES:
                raise ModelFileError(f"{str(path)!r}: {_META} is implausibly large")
            meta_bytes = archive.read(_META)
            payload = archive.read(_PAYLOAD)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise ModelFileError(
            f"{str(path)!r} is not a skagegender model file, or is damaged ({exc})"
        ) from None

    meta = _read_meta(path, meta_bytes, payload)
    if expected_backbone is not None:
        _compare_backbone(path, meta["backbone"], expected_backbone)

    allowed = set(DEFAULT_TRUSTED_TYPES) | set(trusted or ())
    try:
        found = skops.io.get_untrusted_types(data=payload)
    except Exception as exc:
        raise ModelFileError(f"{str(path)!r}: cannot read {_PAYLOAD} ({exc!r})") from None
    refused = [name for name in found if name not in allowed and not _is_own_class(name)]
    if refused:
        raise ModelFileError(
            f"{str(path)!r} holds types that are not trusted: {refused}. Loading them could "
            "run code from the file's author. If you trust that code, pass "
            "load_model_file(..., trusted=[...]) with these names."
        )
    try:
        estimators = skops.io.loads(payload, trusted=list(found))
    except Exception as exc:
        raise ModelFileError(f"{str(path)!r}: cannot rebuild the estimators ({exc!r})") from None
    if not isinstance(estimators, dict) or sorted(estimators) != meta["estimator_names"]:
        raise ModelFileError(
            f"{str(path)!r}: the estimators do not match meta['estimator_names'] "
            f"{meta['estimator_names']}"
        )
    return estimators, meta


def _read_meta(path, meta_bytes, payload):
    """Parse and check meta.json against itself and the payload."""
    try:
        meta = json.loads(meta_bytes)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{str(path)!r}: {_META} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or not all(k in meta for k in (*_WRITTEN_KEYS, "meta_sha256")):
        raise ModelFileError(f"{str(path)!r}: {_META} lacks the keys of a model file")
    version = meta["format_version"]
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{str(path)!r}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{str(path)!r} uses model file format {version}, written by skagegender "
            f"{meta.get('skagegender_version')}; this skagegender reads up to format "
            f"{FORMAT_VERSION}. Upgrade skagegender to load it."
        )
    stored = meta.pop("meta_sha256")
    try:
        actual = _sha256(_canonical(meta))
    except (TypeError, ValueError):  # pragma: no cover - json.loads output always dumps
        actual = None
    if actual != stored:
        raise ModelFileError(
            f"{str(path)!r}: {_META} does not match its checksum; the file was changed "
            "after it was written"
        )
    meta["meta_sha256"] = stored
    if _sha256(payload) != meta["payload_sha256"]:
        raise ModelFileError(
            f"{str(path)!r}: {_PAYLOAD} does not match the checksum in {_META}; the file "
            "was changed or damaged after it was written"
        )
    try:
        _check_backbone(meta.get("backbone"))
    except ValueError as exc:
        raise ModelFileError(f"{str(path)!r}: {exc}") from None
    return meta


def _compare_backbone(path, stored, expected):
    unknown = set(expected) - set(_BACKBONE_KEYS)
    if unknown:
        raise ValueError(
            f"expected_backbone has unknown keys {sorted(unknown)}; use {_BACKBONE_KEYS}"
        )
    for key in _BACKBONE_KEYS:
        if key in expected and expected[key] != stored[key]:
            raise BackboneMismatchError(
                f"model file {str(path)!r} was fitted on backbone {key} {stored[key]!r}, "
                f"expected {expected[key]!r}; its estimators expect that backbone's "
                "features and would give meaningless predictions on others"
            )


def _is_own_class(type_name):
    """Whether ``type_name`` names a class defined under TRUSTED_MODULE_PREFIXES."""
    if not type_name.startswith(TRUSTED_MODULE_PREFIXES):
        return False
    module_name, _, qualname = type_name.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return False
    obj = getattr(module, qualname, None)
    return inspect.isclass(obj) and obj.__module__ == module_name and obj.__qualname__ == qualname
