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
  ``_check_booster_state``).
- Thread and process counts (``n_jobs``, LightGBM's ``num_threads``) are not
  taken from the file: rebuilt estimators get the default, None.
- Sizes are capped (see :data:`MAX_MODEL_BYTES`): the file, the declared
  *and* the actual decompressed size of every member of both zip archives,
  the zip directories, the schema, and the total size of the arrays built.
- Special files (FIFOs, devices), encrypted members, compression methods other
  than stored and deflated, and member names given twice are refused.

Every failure is a :class:`ModelFileError` that names the file and the reason.
"""

import functools
import hashlib
import importlib
import inspect
import io
import itertools
import json
import math
import re
import zipfile
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import ClassVar

from .._archive import ArchiveError, NotZipError, open_zip, read_member, zip_members
from .._utils import NotRegularFileError, atomic_write, npy_header, open_regular_file

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

#: Classes trusted on top of the public scikit-learn estimators: the private
#: helper objects that fitted MLPs and calibrated classifiers hold, the dict
#: types of a fitted VotingRegressor's ``named_estimators_``, LightGBM's
#: estimators, and the embedder stored with an :class:`AgeGenderModel` (which
#: :meth:`AgeGenderModel.load` does not use as stored: it rebuilds a fresh one
#: from the checked settings). Extend per call with
#: ``load_model_file(..., trusted=[...])``.
DEFAULT_TRUSTED_TYPES = (
    "collections.OrderedDict",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
    "lightgbm.sklearn.LGBMRegressor",
    "skagegender.embedding._embedder.ArcFaceEmbedder",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.utils._bunch.Bunch",
)

#: Classes *defined* in these subpackages of skagegender are trusted too (the
#: heads). Only classes qualify, and only those whose ``__module__`` is the
#: module named in the file, so a name that resolves to something a module
#: merely imports (a function, ``os``, ...) is still refused. The embedding
#: subpackage is not listed: its backbones load networks from disk or the
#: network when used.
TRUSTED_MODULE_PREFIXES = ("skagegender.heads.",)

_META = "meta.json"
_PAYLOAD = "estimators.skops"
_SCHEMA = "schema.json"
_MAX_META_BYTES = 1 << 20
# schema.json of the shipped model is 135 kB; its tree is 22 JSON levels deep
# (about 11 nodes).
_MAX_SCHEMA_BYTES = 16 << 20
_MAX_DEPTH = 100
# Members of either zip archive (the shipped payload has 51).
_MAX_MEMBERS = 10_000
# skops protocols whose node semantics this loader implements.
_SKOPS_PROTOCOLS = (2,)
_WRITTEN_KEYS = ("format_version", "skagegender_version", "estimator_names", "payload_sha256")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


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


class _Refused(Exception):
    """Why a model file is refused; load_model_file adds the file's name."""


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


# -- reading the archives --------------------------------------------------------


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


def _open_zip(data, where):
    """A ZipFile over ``data`` (the bytes of ``where``), read within the archive caps."""
    try:
        return open_zip(io.BytesIO(data), len(data), max_members=_MAX_MEMBERS)
    except NotZipError as exc:
        raise _Refused(f"{where} is not a skagegender model file, or is damaged ({exc})") from None
    except ArchiveError as exc:
        raise _Refused(f"{where} {exc}") from None


def _zip_members(archive, where):
    """The members of ``archive`` by name, each readable without surprises."""
    try:
        return zip_members(archive, max_members=_MAX_MEMBERS)
    except ArchiveError as exc:
        raise _Refused(f"{where}: {exc}") from None


def _read_member(archive, info, limit, where):
    """A member's bytes, refused if its declared or actual size exceeds ``limit``."""
    try:
        return read_member(archive, info, limit)
    except ArchiveError as exc:
        raise _Refused(f"{where}: {exc}") from None


# -- the payload's node tree ------------------------------------------------------

_UNBUILT = object()


class _Node:
    """One checked node of a skops schema; ``build`` makes its object once."""

    __slots__ = ("built", "checking", "children", "cls", "kind", "value")

    def __init__(self, kind):
        self.kind = kind
        self.cls = self.value = None
        self.children = ()
        self.checking = True
        self.built = _UNBUILT


@functools.cache
def _scalar_types():
    """Types a TypeNode may name (returned, never called), by skops's spelling."""
    import numpy as np

    types = {f"builtins.{t.__name__}": t
             for t in (str, int, float, bool, complex, list, tuple, dict)}
    types["collections.OrderedDict"] = OrderedDict
    types.update({f"numpy.{t.__name__}": t for t in set(np.sctypeDict.values())
                  if issubclass(t, (np.number, np.bool_, np.str_, np.bytes_))})
    return types


@functools.cache
def _numpy_scalar_types():
    import numpy as np

    return {name: t for name, t in _scalar_types().items() if issubclass(t, np.generic)}


@functools.cache
def _key_types():
    """Types a dict's key_types may name: each is called on a key string."""
    import numpy as np

    return {name: t for name, t in _scalar_types().items()
            if t in (str, int, float, bool) or issubclass(t, (np.integer, np.floating, np.bool_))}


_FACTORY_TYPES = ("builtins.dict", "builtins.list", "collections.OrderedDict")


@functools.cache
def _dict_classes():
    from sklearn.utils import Bunch

    return {"builtins.dict": dict, "collections.OrderedDict": OrderedDict,
            "sklearn.utils._bunch.Bunch": Bunch}


# Modules that sklearn.utils.all_estimators skips.
_SKLEARN_SKIPPED = frozenset({"conftest", "estimator_checks", "experimental", "externals",
                              "setup", "tests"})


def _is_sklearn_estimator(name):
    """Whether ``name`` is one of sklearn's public estimators (what skops trusts).

    The same classes as ``sklearn.utils.all_estimators()``, checked one at a time:
    listing them all imports every sklearn module (seconds and 270 MB).
    """
    module_name, _, class_name = name.rpartition(".")
    parts = module_name.split(".")
    if parts[0] != "sklearn" or class_name.startswith("_") or _SKLEARN_SKIPPED & set(parts):
        return False
    from sklearn.base import BaseEstimator

    cls = _resolve_class(name)
    if (cls is None or cls is BaseEstimator or cls.__module__ != module_name
            or not issubclass(cls, BaseEstimator) or inspect.isabstract(cls)):
        return False
    public = next((i for i, part in enumerate(parts) if part.startswith("_")), len(parts))
    return getattr(importlib.import_module(".".join(parts[:public])), class_name, None) is cls


def _is_method(attr):
    return callable(attr) or isinstance(attr, classmethod)


def _resolve_class(name):
    """The class ``name`` spells (module.Class), or None."""
    module_name, _, qualname = name.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    obj = getattr(module, qualname, None)
    return obj if inspect.isclass(obj) else None


class _PayloadTree:
    """The estimators of a skops payload, checked whole before anything is built.

    Implements skops's protocol 2 for the allowed node kinds only, with its
    sharing rule: a node whose ``__id__`` was seen before is that earlier node.
    """

    def __init__(self, payload, *, trusted, max_bytes, check_types=True):
        self.trusted = frozenset(trusted or ())
        self.max_bytes = max_bytes
        self.memo = {}
        self.untrusted = set()
        self.array_nodes = []
        self.classes = {}
        with _open_zip(payload, _PAYLOAD) as archive:
            self.infos = _zip_members(archive, _PAYLOAD)
            if _SCHEMA not in self.infos:
                raise _Refused(f"{_PAYLOAD} has no {_SCHEMA}")
            budget = max_bytes
            schema_bytes = _read_member(archive, self.infos[_SCHEMA],
                                        min(_MAX_SCHEMA_BYTES, budget), _PAYLOAD)
            budget -= len(schema_bytes)
            try:
                schema = json.loads(schema_bytes)
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                raise _Refused(f"{_PAYLOAD}: {_SCHEMA} is not valid JSON ({exc})") from None
            del schema_bytes
            if not isinstance(schema, dict):
                raise _Refused(f"{_PAYLOAD}: {_SCHEMA} is not a JSON object")
            protocol = schema.get("protocol")
            if type(protocol) is not int or protocol not in _SKOPS_PROTOCOLS:
                raise _Refused(
                    f"{_PAYLOAD} uses skops protocol {protocol!r}; this skagegender reads "
                    f"protocol {', '.join(map(str, _SKOPS_PROTOCOLS))}"
                )
            self.root = self._check(schema, 0)
            if self.untrusted and check_types:
                raise _Refused(
                    f"holds types that are not trusted: {sorted(self.untrusted)}. Loading "
                    "them could run code from the file's author. If you trust that code, "
                    "pass load_model_file(..., trusted=[...]) with these names."
                )
            if self.root.kind != "DictNode":
                raise _Refused(f"{_PAYLOAD} does not hold a dict of estimators")
            self.arrays = self._read_arrays(archive, budget)

    # checks: one method per allowed node kind ---------------------------------

    def _check(self, state, depth):
        if depth > _MAX_DEPTH:
            raise _Refused(f"{_PAYLOAD}: the estimators are nested over {_MAX_DEPTH} levels deep")
        if not isinstance(state, dict):
            raise _Refused(f"{_PAYLOAD}: a node of {_SCHEMA} is not a JSON object")
        node_id = state.get("__id__")
        if node_id is not None and type(node_id) is not int:
            raise _Refused(f"{_PAYLOAD}: a node has the id {node_id!r}, not an integer")
        if node_id and node_id in self.memo:
            node = self.memo[node_id]
            if node.checking:
                raise _Refused(f"{_PAYLOAD}: a node contains itself (id {node_id})")
            return node
        kind, module, name = (state.get(k) for k in ("__loader__", "__module__", "__class__"))
        check = self._CHECKS.get(kind)
        if check is None:
            raise _Refused(
                f"{_PAYLOAD} holds a node of kind {kind!r}, which model files may not use "
                f"(allowed: {sorted(self._CHECKS)}); it could call code chosen by the file"
            )
        if not isinstance(module, str) or not isinstance(name, str):
            raise _Refused(f"{_PAYLOAD}: a {kind} lacks its __module__ or __class__")
        node = _Node(kind)
        if node_id:
            self.memo[node_id] = node
        check(self, node, state, f"{module}.{name}", depth + 1)
        node.checking = False
        return node

    def _expect(self, node, kind, where):
        if node.kind != kind:
            raise _Refused(f"{_PAYLOAD}: {where} must be a {kind}, not a {node.kind}")
        return node

    @staticmethod
    def _only(name, allowed, kind):
        if name not in allowed:
            raise _Refused(
                f"{_PAYLOAD}: a {kind} names the class {name!r}; it may only build "
                f"{sorted(allowed)}"
            )
        return allowed[name]

    def _check_json(self, node, state, name, depth):
        content = state.get("content")
        if not isinstance(content, str):
            raise _Refused(f"{_PAYLOAD}: a JsonNode's content is not a JSON string")
        try:
            node.value = json.loads(content)
        except (ValueError, RecursionError) as exc:
            raise _Refused(f"{_PAYLOAD}: a JsonNode holds invalid JSON ({exc})") from None

    def _check_sequence(self, node, state, name, depth):
        # skops calls a ListNode's class with the list, and a TupleNode's when it
        # is a namedtuple: only the builtins themselves are allowed.
        builtin = list if node.kind == "ListNode" else tuple
        self._only(name, {f"builtins.{builtin.__name__}": builtin}, node.kind)
        content = state.get("content")
        if not isinstance(content, list):
            raise _Refused(f"{_PAYLOAD}: a {node.kind}'s content is not a list")
        node.children = [self._check(item, depth) for item in content]

    def _check_dict(self, node, state, name, depth):
        node.cls = self._only(name, _dict_classes(), "DictNode")
        content = state.get("content")
        if not isinstance(content, dict):
            raise _Refused(f"{_PAYLOAD}: a DictNode's content is not an object")
        key_types = self._expect(self._check(state.get("key_types"), depth), "ListNode",
                                 "a dict's key_types")
        allowed = _key_types()
        types = []
        for item in key_types.children:
            if item.kind != "TypeNode" or item.value not in allowed.values():
                raise _Refused(
                    f"{_PAYLOAD}: a dict's key type must be one of {sorted(allowed)}"
                )
            types.append(item.value)
        if len(types) != len(content):
            raise _Refused(
                f"{_PAYLOAD}: a dict has {len(content)} keys but {len(types)} key types"
            )
        node.children = [(key_type, key, self._check(value, depth))
                         for key_type, (key, value) in zip(types, content.items())]

    def _check_type(self, node, state, name, depth):
        node.value = self._only(name, _scalar_types(), "TypeNode")

    def _check_array(self, node, state, name, depth):
        import numpy as np

        node.cls = self._only(name, {"numpy.ndarray": np.ndarray, **_numpy_scalar_types()},
                              "NdArrayNode")
        kind = state.get("type")
        if kind == "numpy":
            member = state.get("file")
            if not isinstance(member, str) or member not in self.infos or member == _SCHEMA:
                raise _Refused(f"{_PAYLOAD}: an array names the missing member {member!r}")
            node.value = member
            self.array_nodes.append(node)
        elif kind == "json":
            content = state.get("content")
            if not isinstance(content, list):
                raise _Refused(f"{_PAYLOAD}: an object array's content is not a list")
            shape = self._expect(self._check(state.get("shape"), depth), "TupleNode",
                                 "an object array's shape")
            if not all(d.kind == "JsonNode" and type(d.value) is int and d.value >= 0
                       for d in shape.children):
                raise _Refused(f"{_PAYLOAD}: an object array's shape is not a tuple of sizes")
            node.value = shape
            node.children = [self._check(item, depth) for item in content]
        else:
            raise _Refused(f"{_PAYLOAD}: an array has the unknown type {kind!r}")

    def _check_random_state(self, node, state, name, depth):
        import numpy as np

        node.cls = self._only(name, {"numpy.random.mtrand.RandomState": np.random.RandomState},
                              "RandomStateNode")
        node.children = [self._expect(self._check(state.get("content"), depth), "DictNode",
                                      "a random state's content")]

    def _check_defaultdict(self, node, state, name, depth):
        self._only(name, {"collections.defaultdict": defaultdict}, "DefaultDictNode")
        content = state.get("content")
        if not isinstance(content, dict):
            raise _Refused(f"{_PAYLOAD}: a DefaultDictNode's content is not an object")
        main = self._expect(self._check(content.get("main"), depth), "DictNode",
                            "a defaultdict's items")
        factory = self._check(content.get("default_factory"), depth)
        factories = [_scalar_types()[name] for name in _FACTORY_TYPES]
        if not ((factory.kind == "TypeNode" and factory.value in factories)
                or (factory.kind == "JsonNode" and factory.value is None)):
            raise _Refused(f"{_PAYLOAD}: a defaultdict's factory must be one of {_FACTORY_TYPES}")
        node.children = [main, factory]

    def _check_object(self, node, state, name, depth):
        node.cls = self._trusted_class(name)
        if node.cls is None:
            self.untrusted.add(name)
        content = state.get("content")
        if content is not None:
            attrs = self._check(content, depth)
            if attrs.kind == "JsonNode" and attrs.value is None:
                return
            self._expect(attrs, "DictNode", f"the attributes of a {name}")
            if attrs.cls is not dict or any(key_type is not str
                                            for key_type, _, _ in attrs.children):
                raise _Refused(f"{_PAYLOAD}: the attributes of a {name} are not a dict of str")
            node.children = [attrs]
            # an attribute named like a method would replace it on the instance
            shadowed = [key for _, key, _ in attrs.children if node.cls is not None
                        and _is_method(inspect.getattr_static(node.cls, key, None))]
            if shadowed:
                raise _Refused(f"{_PAYLOAD}: the attributes {shadowed} of a {name} would "
                               "replace its methods")
            if name == "lightgbm.basic.Booster":
                _check_booster_state(attrs)

    _CHECKS: ClassVar[dict] = {
        "DictNode": _check_dict,
        "ListNode": _check_sequence,
        "TupleNode": _check_sequence,
        "JsonNode": _check_json,
        "TypeNode": _check_type,
        "NdArrayNode": _check_array,
        "RandomStateNode": _check_random_state,
        "DefaultDictNode": _check_defaultdict,
        "ObjectNode": _check_object,
    }

    def _trusted_class(self, name):
        if name not in self.classes:
            trusted = (name in self.trusted or name in DEFAULT_TRUSTED_TYPES
                       or _is_sklearn_estimator(name) or _is_own_class(name))
            self.classes[name] = _resolve_class(name) if trusted else None
        return self.classes[name]

    # arrays ---------------------------------------------------------------------

    def _read_arrays(self, archive, budget):
        """The .npy members the tree uses, each header checked against its data."""
        data, total = {}, 0
        for node in self.array_nodes:
            member = node.value
            if member not in data:
                data[member] = _read_member(archive, self.infos[member], budget, _PAYLOAD)
                budget -= len(data[member])
            total += _npy_nbytes(data[member], member)
            if total > self.max_bytes:  # shared members are built once per node
                raise _Refused(
                    f"{_PAYLOAD}: its arrays take over {self.max_bytes:,} bytes once built"
                )
        return data

    # building -------------------------------------------------------------------

    def build(self):
        """The estimators; only the checked tree's classes and values are used."""
        try:
            return self._build(self.root)
        except _Refused:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure means a damaged file
            raise _Refused(
                f"cannot rebuild the estimators ({type(exc).__name__}: {exc})"
            ) from None

    def _build(self, node):
        if node.built is not _UNBUILT:
            return node.built
        kind = node.kind
        if kind in ("JsonNode", "TypeNode"):
            obj = node.value
        elif kind == "ListNode":
            obj = [self._build(child) for child in node.children]
        elif kind == "TupleNode":
            obj = tuple(self._build(child) for child in node.children)
        elif kind == "DictNode":
            obj = node.cls()
            for key_type, key, value in node.children:
                obj[key_type(key)] = self._build(value)
        elif kind == "NdArrayNode":
            obj = self._build_array(node)
        elif kind == "RandomStateNode":
            obj = node.cls()
            obj.set_state(self._build(node.children[0]))
        elif kind == "DefaultDictNode":
            main, factory = node.children
            obj = defaultdict(self._build(factory))
            obj.update(self._build(main))
        else:  # ObjectNode: no constructor runs, only __setstate__ or a dict update
            obj = node.cls.__new__(node.cls)
            if node.children:
                attrs = self._build(node.children[0])
                _drop_thread_settings(attrs)
                for holder in ("params", "_other_params"):  # LightGBM's parameter dicts
                    _drop_thread_settings(attrs.get(holder))
                if hasattr(obj, "__setstate__"):
                    obj.__setstate__(attrs)
                else:
                    obj.__dict__.update(attrs)
        node.built = obj
        return obj

    def _build_array(self, node):
        import numpy as np

        if isinstance(node.value, str):
            array = np.load(io.BytesIO(self.arrays[node.value]), allow_pickle=False)
            return array if node.cls is np.ndarray else node.cls(array)
        shape = self._build(node.value)
        items = [self._build(child) for child in node.children]
        if len(shape) == 1:
            array = np.empty(len(items), dtype=object)
            for i, item in enumerate(items):
                array[i] = item
            return array
        return np.array(items, dtype=object)


# How many threads or processes an estimator runs is the machine's business, not
# the file's: rebuilt objects get the default (None: one job in scikit-learn,
# LightGBM's own default).
_THREAD_SETTINGS = ("n_jobs", "num_threads", "num_thread", "nthread", "nthreads")


def _drop_thread_settings(params):
    if isinstance(params, dict):
        for name in _THREAD_SETTINGS:
            if name in params:
                params[name] = None


def _check_booster_state(attrs):
    """Check the model text of a LightGBM Booster's state, before LightGBM parses it.

    LightGBM's C++ code parses the text and predicts without bounds checks: a
    child index out of range reads out of bounds, a cycle among nodes never
    ends, and a parse error inside its threaded parser (used when the text
    lists ``tree_sizes``) aborts the process. So every tree is checked here, and
    the ``tree_sizes`` line is dropped: LightGBM then parses the trees one after
    another, with the same result, and raises on an error.
    """
    entries = {key: value for _, key, value in attrs.children}
    if "handle" in entries:
        raise _Refused(f"{_PAYLOAD}: a LightGBM Booster's state has a 'handle' entry")
    text = entries.get("_handle")
    if text is None or (text.kind == "JsonNode" and text.value is None):
        return
    if text.kind != "JsonNode" or not isinstance(text.value, str):
        raise _Refused(f"{_PAYLOAD}: a LightGBM Booster's model is not a text")
    try:
        text.value = _checked_lightgbm_model(text.value)
    except (ValueError, IndexError) as exc:
        raise _Refused(f"{_PAYLOAD}: a LightGBM Booster's model is refused ({exc})") from None


def _checked_lightgbm_model(text):
    """``text`` without its tree_sizes line, once every tree in it is well formed."""
    head, _, rest = text.partition("\nTree=")
    header = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
    if not {"max_feature_idx", "num_tree_per_iteration"} <= set(header):
        raise ValueError("the header lacks max_feature_idx or num_tree_per_iteration")
    n_features = int(header["max_feature_idx"]) + 1
    if n_features < 1 or int(header["num_tree_per_iteration"]) < 1:
        raise ValueError("the header counts no features or no trees per iteration")
    trees = ("Tree=" + rest).partition("\nend of trees")[0].split("\nTree=") if rest else []
    for number, block in enumerate(trees):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        _check_lightgbm_tree(fields, n_features, number)
    return "".join(line for line in text.splitlines(keepends=True)
                   if not line.startswith("tree_sizes="))


def _check_lightgbm_tree(fields, n_features, number):
    def values(key, count, kind=int):
        if key not in fields:
            raise ValueError(f"tree {number} lacks {key}")
        items = fields[key].split() if count else []
        if len(items) != count:
            raise ValueError(f"tree {number}: {key} has {len(items)} values, not {count}")
        return [kind(v) for v in items]

    (leaves,), n_cat = values("num_leaves", 1), int(fields.get("num_cat", 0))
    if leaves < 1 or n_cat < 0 or fields.get("is_linear", "0") != "0":
        raise ValueError(f"tree {number}: num_leaves {leaves}, num_cat {n_cat} or a linear tree")
    values("leaf_value", leaves, float)
    if leaves == 1:
        return
    splits = leaves - 1
    if not all(0 <= f < n_features for f in values("split_feature", splits)):
        raise ValueError(f"tree {number}: a split on a feature out of range")
    values("threshold", splits, float)
    decisions = values("decision_type", splits)
    children = values("left_child", splits) + values("right_child", splits)
    # a tree: from the root, every other node and every leaf is reached exactly once
    seen, todo = set(), [0]
    while todo:
        node = todo.pop()
        for child in (children[node], children[node + splits]):
            key = child if child >= 0 else splits + ~child
            if not (0 < child < splits or 0 <= ~child < leaves) or key in seen:
                raise ValueError(f"tree {number}: child {child} out of range or reached twice")
            seen.add(key)
            if child > 0:
                todo.append(child)
    if len(seen) != splits - 1 + leaves:
        raise ValueError(f"tree {number}: some nodes are not reached from the root")
    if n_cat or any(d & 1 for d in decisions):
        bounds = values("cat_boundaries", n_cat + 1)
        if bounds[0] != 0 or any(a > b for a, b in itertools.pairwise(bounds)):
            raise ValueError(f"tree {number}: cat_boundaries out of order")
        values("cat_threshold", bounds[-1])
        thresholds = fields["threshold"].split()
        for d, t in zip(decisions, thresholds):
            if d & 1 and not 0 <= int(float(t)) < n_cat:
                raise ValueError(f"tree {number}: a categorical split out of range")


def _npy_nbytes(data, member):
    """Bytes of the array in .npy ``data``, after checking its header against its length."""
    fp = io.BytesIO(data)
    try:
        shape, dtype = npy_header(fp)
    except (ValueError, SyntaxError, TypeError, EOFError) as exc:
        raise _Refused(f"{_PAYLOAD}: array {member!r} has a damaged header ({exc})") from None
    if (dtype.hasobject or dtype.names is not None or dtype.subdtype is not None
            or dtype.kind not in "biufcSU"):
        raise _Refused(f"{_PAYLOAD}: array {member!r} has the unsupported dtype {dtype}")
    nbytes = math.prod(shape) * dtype.itemsize
    if fp.tell() + nbytes != len(data):
        raise _Refused(
            f"{_PAYLOAD}: array {member!r} declares shape {shape} of {dtype} "
            f"({nbytes:,} bytes) but holds {len(data) - fp.tell():,} bytes"
        )
    return nbytes


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


def _is_own_class(type_name):
    """Whether ``type_name`` names a class defined under TRUSTED_MODULE_PREFIXES."""
    if not type_name.startswith(TRUSTED_MODULE_PREFIXES):
        return False
    cls = _resolve_class(type_name)
    module_name, _, qualname = type_name.rpartition(".")
    return cls is not None and cls.__module__ == module_name and cls.__qualname__ == qualname
