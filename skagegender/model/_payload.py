"""The estimators member of a model file: a skops node tree, checked whole, then built.

:class:`_PayloadTree` implements skops's protocol 2 for the node kinds that fitted
heads need, and builds objects of trusted classes only; the rules are listed in
:mod:`skagegender.model._persistence`. The zip archives (the model file and the
payload inside it) are read by :mod:`skagegender._archive`.
"""

import functools
import importlib
import inspect
import io
import json
import math
from collections import OrderedDict, defaultdict
from typing import ClassVar

from .._archive import ArchiveError, NotZipError, open_zip, read_member, zip_members
from .._utils import npy_header
from ._booster import checked_lightgbm_model

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


class _Refused(Exception):
    """Why a model file is refused; load_model_file adds the file's name."""


# -- the zip archives -------------------------------------------------------------


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
        text.value = checked_lightgbm_model(text.value)
    except (ValueError, IndexError) as exc:
        raise _Refused(f"{_PAYLOAD}: a LightGBM Booster's model is refused ({exc})") from None



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


def _is_own_class(type_name):
    """Whether ``type_name`` names a class defined under TRUSTED_MODULE_PREFIXES."""
    if not type_name.startswith(TRUSTED_MODULE_PREFIXES):
        return False
    cls = _resolve_class(type_name)
    module_name, _, qualname = type_name.rpartition(".")
    return cls is not None and cls.__module__ == module_name and cls.__qualname__ == qualname
