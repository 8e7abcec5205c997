"""Hostile and damaged model files (issue 12, items 2-5).

Every crafted file here has VALID checksums: an attacker recomputes them, so each
test proves a defence other than the checksum. The files start from the shipped
model (``skagegender/pretrained/default.skag``) and change one thing.
"""

import copy
import hashlib
import io
import json
import os
import socket
import struct
import time
import tracemalloc
import warnings
import zipfile
import zlib

import numpy as np
import pytest

from skagegender.model import AgeGenderModel, BackboneMismatchError, ModelFileError
from skagegender.model._persistence import load_model_file, save_model_file
from skagegender.pretrained import MODEL_FILE

MiB = 1 << 20


# -- crafting files --------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    """meta.json (dict) and the payload's members (name -> bytes) of the shipped model."""
    with zipfile.ZipFile(MODEL_FILE) as archive:
        meta = json.loads(archive.read("meta.json"))
        payload = archive.read("estimators.skops")
    with zipfile.ZipFile(io.BytesIO(payload)) as inner:
        members = {info.filename: inner.read(info) for info in inner.infolist()}
    return meta, members


def _zip(members, compression=zipfile.ZIP_STORED):
    """A zip of (name, bytes) pairs; a name may repeat."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name" is the point
        with zipfile.ZipFile(buffer, "w", compression) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return buffer.getvalue()


def _sign(meta, payload):
    """meta.json bytes with the checksums an attacker would recompute."""
    meta = {k: v for k, v in meta.items() if k != "meta_sha256"}
    meta["payload_sha256"] = hashlib.sha256(payload).hexdigest()
    canonical = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    meta["meta_sha256"] = hashlib.sha256(canonical).hexdigest()
    return json.dumps(meta).encode()


def _write(path, meta, members, *, schema=None, payload=None,
           compression=zipfile.ZIP_STORED):
    """Write a model file with valid checksums; returns its path."""
    members = dict(members)
    if schema is not None:
        members["schema.json"] = json.dumps(schema).encode()
    if payload is None:
        payload = _zip(members.items())
    path.write_bytes(_zip([("meta.json", _sign(meta, payload)),
                           ("estimators.skops", payload)], compression))
    return path


def _schema(members):
    return json.loads(members["schema.json"])


def _json(value):
    return {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode",
            "content": json.dumps(value), "is_json": True}


def _node(loader, dotted, **fields):
    module, _, name = dotted.rpartition(".")
    return {"__class__": name, "__module__": module, "__loader__": loader, **fields}


def _list(*items, cls="builtins.list", **fields):
    return _node("ListNode", cls, content=list(items), **fields)


def _tuple(*items):
    return _node("TupleNode", "builtins.tuple", content=list(items))


def _dict(entries, key_type="builtins.str"):
    return _node("DictNode", "builtins.dict", content=dict(entries),
                 key_types=_list(*[_node("TypeNode", key_type) for _ in entries]))


def _central_entries(data):
    """(offset, name) of each central directory entry of a zip's bytes."""
    end = data.rindex(b"PK\x05\x06")
    count, _, start = struct.unpack("<HLL", data[end + 10:end + 20])
    entries, at = [], start
    for _ in range(count):
        name_len, extra_len, comment_len = struct.unpack("<HHH", data[at + 28:at + 34])
        entries.append((at, data[at + 46:at + 46 + name_len].decode()))
        at += 46 + name_len + extra_len + comment_len
    return entries


def _patch(data, name, **fields):
    """Rewrite fields of ``name``'s central directory entry (what zipfile trusts)."""
    layout = {"flags": (8, "<H"), "method": (10, "<H"), "file_size": (24, "<L")}
    data = bytearray(data)
    for at, entry in _central_entries(bytes(data)):
        if entry == name:
            for field, value in fields.items():
                offset, fmt = layout[field]
                struct.pack_into(fmt, data, at + offset, value)
    return bytes(data)


def _inner_patched(meta, members, tmp_path, name, **fields):
    payload = _patch(_zip(members.items()), name, **fields)
    return _write(tmp_path / "m.skag", meta, {}, payload=payload)


# -- guards that make an attack observable --------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Record (and stop) every attempt to open a network connection."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access during a model file load")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def _refused(path, match, load=load_model_file, **kwargs):
    """Load ``path``: a ModelFileError naming the file, in seconds, with little memory."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ModelFileError, match=match) as info:
            load(path, **kwargs)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - start < 10
    assert peak < 200 * MiB, f"{peak / MiB:.0f} MiB allocated"
    assert str(path) in str(info.value)
    return info.value


# -- item 2: constructors chosen by the file -------------------------------------

# Each route makes skops call a class named by the file with an argument of the file.
ROUTES = {
    # skops's reduce-style node: cls(*args)
    "ConstructorFromReduceNode": lambda cls, arg: _node(
        "ConstructorFromReduceNode", cls, content=_tuple(_json(arg))),
    # a dict whose key type is the class: cls(key)
    "dict key type": lambda cls, arg: _node(
        "DictNode", "builtins.dict", content={arg: _json(1)},
        key_types=_list(_node("TypeNode", cls))),
    # a list whose class is the class: cls([items])
    "ListNode class": lambda cls, arg: _list(_json(arg), cls=cls),
}


def _with_estimator(members, node):
    schema = _schema(members)
    schema["content"]["age"] = node
    return schema


@pytest.mark.slow
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_skops_alone_calls_the_constructor_the_file_names(shipped, route):
    """The recipe is live: skops.io.loads builds the object through that call."""
    import skops.io

    _, members = shipped
    members = {**members, "schema.json": json.dumps(_with_estimator(
        members, ROUTES[route]("skagegender.embedding._embedder.ArcFaceEmbedder",
                               "chosen-by-the-file"))).encode()}
    payload = _zip(members.items())
    found = skops.io.get_untrusted_types(data=payload)
    age = skops.io.loads(payload, trusted=found)["age"]
    built = next(iter(age)) if isinstance(age, dict) else age
    assert type(built).__name__ == "ArcFaceEmbedder"
    assert "chosen-by-the-file" in str(built.model)


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_file_chosen_backbone_constructor_is_refused(shipped, tmp_path, no_network, route,
                                                     monkeypatch):
    """InsightFaceBackbone(<dir>) would create <dir>'s parent and download a pack."""
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path / "insightface"))
    target = tmp_path / "created-by-the-attack" / "pack"
    meta, members = shipped
    schema = _with_estimator(members, ROUTES[route](
        "skagegender.embedding._backbones.InsightFaceBackbone", str(target)))
    path = _write(tmp_path / "m.skag", meta, members, schema=schema)
    _refused(path, "may not use|may only build|key type must be")
    _refused(path, "may not use|may only build|key type must be", load=AgeGenderModel.load)
    assert not target.parent.exists() and not (tmp_path / "insightface").exists()
    assert no_network == []


def test_lightgbm_booster_on_dev_zero_is_refused(shipped, tmp_path):
    """Booster(None, None, "/dev/zero") hung and grew past 2.3 GB."""
    meta, members = shipped
    node = _node("ConstructorFromReduceNode", "lightgbm.basic.Booster",
                 content=_tuple(_json(None), _json(None), _json("/dev/zero")))
    path = _write(tmp_path / "m.skag", meta, members, schema=_with_estimator(members, node))
    _refused(path, "ConstructorFromReduceNode.*may not use")


@pytest.mark.parametrize("node, match", [
    (_node("FunctionNode", "os.system"), "FunctionNode"),
    (_node("MethodNode", "skagegender.heads._age.AgeRegressor",
           content={"func": "fit", "obj": _json(None)}), "MethodNode"),
    (_node("PartialNode", "functools.partial",
           content={"func": _json(None), "args": _tuple(), "kwds": _json({}),
                    "namespace": _json(None)}), "PartialNode"),
    (_node("ReduceNode", "sklearn.tree._tree.Tree",
           __reduce__={"args": _tuple()}, content=_json(None)), "ReduceNode"),
    (_node("ObjectNode", "skagegender.embedding._backbones.InsightFaceBackbone",
           content=_dict({"name": _json("buffalo_l")})), "not trusted.*InsightFaceBackbone"),
    (_node("ObjectNode", "os.system"), "not trusted"),
    (_node("ObjectNode", "skagegender.heads._age.AgeRegressor",
           content=_dict({"predict": _node("TypeNode", "builtins.str")})),
     r"attributes \['predict'\] .* would replace its methods"),
    (_node("NdArrayNode", "skagegender.embedding._backbones.InsightFaceBackbone",
           type="json", content=[], shape=_tuple(_json(0))), "may only build"),
    (_node("DictNode", "skagegender.embedding._embedder.ArcFaceEmbedder", content={},
           key_types=_list()), "may only build"),
    (_node("TupleNode", "collections.namedtuple", content=[]), "may only build"),
    (_node("RandomStateNode", "os.system", content=_dict({})), "may only build"),
    (_node("DefaultDictNode", "collections.defaultdict", content={
        "main": _dict({}), "default_factory": _node("TypeNode", "os.system")}),
     "may only build"),
])
def test_other_node_kinds_and_classes_are_refused(shipped, tmp_path, node, match):
    meta, members = shipped
    path = _write(tmp_path / "m.skag", meta, members, schema=_with_estimator(members, node))
    _refused(path, match)


def test_shared_ids_and_cycles(shipped, tmp_path):
    meta, members = shipped
    # skops's sharing rule: a node whose __id__ was seen is that earlier node, so a
    # node that contains its own id would recurse for ever
    cyclic = _list(_list(_json(1), __id__=7), __id__=7)
    path = _write(tmp_path / "m.skag", meta, members, schema=_with_estimator(
        members, _list(_json(0), cyclic)))
    _refused(path, "contains itself")
    deep = _json(0)
    for _ in range(200):
        deep = _list(deep)
    path = _write(tmp_path / "m.skag", meta, members, schema=_with_estimator(members, deep))
    _refused(path, "nested over")


# -- item 3: embedder settings stored in the file --------------------------------


def _embedder_settings(schema):
    return schema["content"]["embedder"]["content"]


def _with_settings(members, drop=(), **settings):
    schema = _schema(members)
    stored = _embedder_settings(schema)
    for name in drop:
        del stored["content"][name]
    for name, value in settings.items():
        stored["content"][name] = _json(value)
    stored["key_types"] = _list(*[_node("TypeNode", "builtins.str") for _ in stored["content"]])
    return schema


def test_stored_backbone_must_match_the_metadata(shipped, tmp_path, no_network, monkeypatch):
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path / "insightface"))
    meta, members = shipped
    path = _write(tmp_path / "m.skag", meta, members,
                  schema=_with_settings(members, model="buffalo_l"))
    error = _refused(path, "names the backbone 'buffalo_l'", load=AgeGenderModel.load)
    assert isinstance(error, BackboneMismatchError)
    # metadata rewritten to agree: still no download, the file does not choose backbones
    meta = copy.deepcopy(meta)
    meta["backbone"]["name"] = "buffalo_l"
    _write(path, meta, members, schema=_with_settings(members, model="buffalo_l"))
    _refused(path, "not part of skagegender", load=AgeGenderModel.load)
    # stored layers that the metadata does not record
    _write(path, shipped[0], members, schema=_with_settings(members, layers="age-gender"))
    _refused(path, "layers=", load=AgeGenderModel.load)
    assert no_network == [] and not (tmp_path / "insightface").exists()


@pytest.mark.parametrize("settings, match", [
    ({"max_pixels": 10**15}, "max_pixels=1000000000000000 loosens a guard"),
    ({"det_max_side": 10**6}, "det_max_side=1000000 loosens a guard"),
    ({"max_pixels": 1e15}, "invalid"),
    ({"max_pixels": None}, "invalid|loosens"),
    ({"min_score": 7}, "invalid"),
    ({"layers": {"a": 1}}, "not a plain value|invalid"),
])
def test_stored_guards_keep_safe_bounds(shipped, tmp_path, settings, match):
    meta, members = shipped
    path = _write(tmp_path / "m.skag", meta, members, schema=_with_settings(members, **settings))
    _refused(path, match, load=AgeGenderModel.load)


def test_machine_settings_are_not_taken_from_the_file(shipped, tmp_path, portrait):
    from skagegender.embedding import ArcFaceEmbedder

    meta, members = shipped
    cache = tmp_path / "cache-chosen-by-the-file"
    schema = _with_settings(
        members, cache=str(cache), n_jobs=64, providers=["CUDAExecutionProvider"],
        n_threads=64, batch_size=10**9, on_missing="raise", color="bgr",
        max_pixels=1_000_000)  # a guard may be tightened
    path = _write(tmp_path / "m.skag", meta, members, schema=schema)
    model = AgeGenderModel.load(path)
    defaults = ArcFaceEmbedder().get_params()
    params = model.embedder_.get_params()
    for name in ("cache", "n_jobs", "providers", "n_threads", "batch_size", "on_missing",
                 "color"):
        assert params[name] == defaults[name], name
    assert params["max_pixels"] == 1_000_000 and params["layers"] == "age-gender-finetuned"
    assert model.predict_faces(portrait)[0]["gender"] == "male"
    assert not cache.exists()


def test_a_file_saved_before_a_setting_existed_still_loads(shipped, tmp_path, portrait):
    meta, members = shipped
    path = _write(tmp_path / "m.skag", meta, members, schema=_with_settings(
        members, drop=("max_pixels", "det_max_side", "n_threads", "cache")))
    model = AgeGenderModel.load(path)
    assert model.embedder_.max_pixels == AgeGenderModel.load(MODEL_FILE).embedder_.max_pixels
    assert len(model.predict_faces(portrait)) == 1


def test_stored_embedder_of_another_type_is_refused(shipped, tmp_path):
    meta, members = shipped
    schema = _schema(members)
    import sklearn

    schema["content"]["embedder"] = _node(
        "ObjectNode", "sklearn.preprocessing._data.StandardScaler",
        content=_dict({"copy": _json(True), "_sklearn_version": _json(sklearn.__version__)}))
    path = _write(tmp_path / "m.skag", meta, members, schema=schema)
    _refused(path, "not an ArcFaceEmbedder", load=AgeGenderModel.load)


# -- item 4: zip bombs ------------------------------------------------------------


def test_payload_declaring_a_huge_size_is_refused_before_reading(shipped, tmp_path):
    meta, members = shipped
    path = _write(tmp_path / "m.skag", meta, members, compression=zipfile.ZIP_DEFLATED)
    path.write_bytes(_patch(path.read_bytes(), "estimators.skops", file_size=0xFFFF0000))
    _refused(path, "declares 4,294,901,760 bytes decompressed, over the cap")


def test_deflated_payload_over_the_cap_is_refused(shipped, tmp_path):
    """An honest deflate bomb: 65 MiB of payload in a file of 1.4 MB."""
    meta, members = shipped
    members = {**members, "padding.npy": bytes(64 * MiB)}
    path = _write(tmp_path / "m.skag", meta, members, compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 2 * MiB
    _refused(path, "over the cap of 33,554,432", max_bytes=32 * MiB)


def test_member_longer_than_declared_is_refused(shipped, tmp_path):
    """The deflate stream holds 32 MiB, the directory says 1 kB: read stops, CRC fails."""
    meta, members = shipped
    members = {**members, "padding.npy": bytes(32 * MiB)}
    path = _write(tmp_path / "m.skag", meta, members, compression=zipfile.ZIP_DEFLATED)
    path.write_bytes(_patch(path.read_bytes(), "estimators.skops", file_size=1024))
    _refused(path, "estimators.skops' is damaged")


def test_inner_array_declaring_2_gib_is_refused(shipped, tmp_path):
    meta, members = shipped
    name = next(n for n in members if n.endswith(".npy"))
    path = _inner_patched(meta, members, tmp_path, name, file_size=2**31)
    _refused(path, f"{name}' declares 2,147,483,648 bytes")


def test_inner_deflate_bomb_is_refused(shipped, tmp_path):
    meta, members = shipped
    schema = _schema(members)
    bomb = io.BytesIO()
    np.save(bomb, np.zeros(8 * MiB // 8))
    members = {**members, "bomb.npy": bomb.getvalue()}
    schema["content"]["age"] = _node("NdArrayNode", "numpy.ndarray", type="numpy",
                                     file="bomb.npy")
    members["schema.json"] = json.dumps(schema).encode()
    payload = _zip(members.items(), zipfile.ZIP_DEFLATED)
    assert len(payload) < 2 * MiB
    path = _write(tmp_path / "m.skag", meta, {}, payload=payload)
    _refused(path, "bomb.npy' declares .* over the cap", max_bytes=4 * MiB)


def test_array_header_must_match_its_data(shipped, tmp_path):
    """A .npy header declaring 10^12 floats over 8 bytes of data."""
    meta, members = shipped
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    header = header.ljust(117) + "\n"
    lie = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(8)
    schema = _with_estimator(members, _node("NdArrayNode", "numpy.ndarray", type="numpy",
                                            file="lie.npy"))
    path = _write(tmp_path / "m.skag", meta, {**members, "lie.npy": lie}, schema=schema)
    _refused(path, "declares shape")


def test_one_array_referenced_many_times_counts_each_time(shipped, tmp_path):
    meta, members = shipped
    array = io.BytesIO()
    np.save(array, np.zeros(MiB // 8))
    refs = [_node("NdArrayNode", "numpy.ndarray", type="numpy", file="one.npy", __id__=i + 1)
            for i in range(100)]
    schema = _with_estimator(members, _list(*refs))
    path = _write(tmp_path / "m.skag", meta, {**members, "one.npy": array.getvalue()},
                  schema=schema)
    _refused(path, "arrays take over", max_bytes=16 * MiB)


def test_huge_zip_directory_is_refused(shipped, tmp_path):
    """zipfile reads the whole directory first: 30,000 empty members (1.5 MB)."""
    meta, members = shipped
    many = list(members.items()) + [(f"{i:08d}.npy", b"") for i in range(30_000)]
    path = _write(tmp_path / "m.skag", meta, {}, payload=_zip(many))
    _refused(path, f"declares {len(many):,} members in a zip directory")


# -- item 5: damaged files ---------------------------------------------------------


def _deflated_model(meta, members, tmp_path):
    path = _write(tmp_path / "m.skag", meta, members, compression=zipfile.ZIP_DEFLATED)
    return path, path.read_bytes()


def test_corrupt_deflate_stream(shipped, tmp_path):
    meta, members = shipped
    path, data = _deflated_model(meta, members, tmp_path)
    at = next(at for at, name in _central_entries(data) if name == "estimators.skops")
    local = struct.unpack("<L", data[at + 42:at + 46])[0]
    name_len, extra_len = struct.unpack("<HH", data[local + 26:local + 30])
    start = local + 30 + name_len + extra_len
    data = bytearray(data)
    data[start] = 0xFF  # block type 3: invalid
    path.write_bytes(bytes(data))
    _refused(path, "damaged \\(error: .*invalid block type")


@pytest.mark.parametrize("fields, match", [
    ({"flags": 0x1}, "is encrypted"),
    ({"method": 99}, "compression method 99"),
])
def test_unreadable_members(shipped, tmp_path, fields, match):
    meta, members = shipped
    path, data = _deflated_model(meta, members, tmp_path)
    path.write_bytes(_patch(data, "estimators.skops", **fields))
    _refused(path, match)
    path = _inner_patched(meta, members, tmp_path, "schema.json", **fields)
    _refused(path, match)


def test_duplicate_member_names(shipped, tmp_path):
    meta, members = shipped
    payload = _zip(members.items())
    path = tmp_path / "m.skag"
    signed = _sign(meta, payload)
    path.write_bytes(_zip([("meta.json", signed), ("estimators.skops", payload),
                           ("estimators.skops", payload)]))
    _refused(path, "holds the member 'estimators.skops' twice")
    schema = _with_estimator(members, _node("FunctionNode", "os.system"))
    inner = _zip([*members.items(), ("schema.json", json.dumps(schema).encode())])
    _write(path, meta, {}, payload=inner)
    _refused(path, "holds the member 'schema.json' twice")


@pytest.mark.parametrize("drop", ["fallback_age", "n_features"])
def test_metadata_without_model_keys(shipped, tmp_path, drop):
    meta, members = shipped
    meta = {k: v for k, v in meta.items() if k != drop}
    path = _write(tmp_path / "m.skag", meta, members)
    _refused(path, f"meta\\['{drop}'\\]", load=AgeGenderModel.load)


def test_valid_model_file_that_is_not_an_age_gender_model(tmp_path):
    from sklearn.linear_model import Ridge

    path = tmp_path / "ridge.skag"
    save_model_file(path, {"age": Ridge().fit([[0.0], [1.0]], [20.0, 40.0])},
                    {"backbone": {"name": "sface", "sha256": "0" * 64, "options": {}}})
    assert load_model_file(path)[0]["age"].predict([[0.5]]) == [30.0]
    _refused(path, "is not an AgeGenderModel file", load=AgeGenderModel.load)


def test_truncated_and_garbage_files(shipped, tmp_path):
    meta, members = shipped
    path = _write(tmp_path / "m.skag", meta, members)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _refused(path, "not a skagegender model file, or is damaged")
    path.write_bytes(zlib.compress(data))
    _refused(path, "not a skagegender model file, or is damaged")


def test_special_files_are_refused_at_once(tmp_path):
    fifo = tmp_path / "model.skag"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer for ever
    _refused(fifo, "not a regular file")
    link = tmp_path / "zero.skag"
    link.symlink_to("/dev/zero")
    _refused(link, "not a regular file")
    _refused(tmp_path, "not a regular file")
    with pytest.raises(FileNotFoundError):
        load_model_file(tmp_path / "missing.skag")


def test_shipped_model_loads_and_rebuilds_its_embedder():
    model = AgeGenderModel.load(MODEL_FILE)
    assert model.embedder_.get_params()["layers"] == "age-gender-finetuned"
    assert model.backbone_["name"] == "sface" and model.n_features_in_ == 2361


# -- LightGBM heads: LightGBM's C++ code parses and walks the model text ------------

ABORTING_TREES = (  # a tree without leaf_value, in the threaded parser (tree_sizes given)
    "tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nlabel_index=0\n"
    "max_feature_idx=0\nobjective=regression\nfeature_names=a\nfeature_infos=none\n"
    "tree_sizes=60\n\nTree=0\nnum_leaves=2000000000\nnum_cat=0\nsplit_feature=0\n"
    "shrinkage=1\n\n\nend of trees\n"
)


@pytest.fixture
def lightgbm_file(tmp_path):
    """A real model file with a LightGBM age head, and a way to rewrite its trees."""
    lightgbm = pytest.importorskip("lightgbm")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    head = lightgbm.LGBMRegressor(n_estimators=3, num_leaves=4, verbose=-1)
    head.fit(X, X[:, 0] + rng.normal(size=200))
    path = save_model_file(tmp_path / "lgbm.skag", {"age": head}, {"backbone": {
        "name": "sface", "sha256": "0" * 64, "options": {}}})
    with zipfile.ZipFile(path) as archive:
        meta = json.loads(archive.read("meta.json"))
        payload = archive.read("estimators.skops")
    with zipfile.ZipFile(io.BytesIO(payload)) as inner:
        members = {info.filename: inner.read(info) for info in inner.infolist()}

    def booster_state(schema):
        nodes = [schema]
        while nodes:
            node = nodes.pop()
            if isinstance(node, dict):
                if node.get("__class__") == "Booster":
                    return node["content"]["content"]
                nodes.extend(node.values())
            elif isinstance(node, list):
                nodes.extend(node)

    def rewrite(edit):
        schema = _schema(members)
        edit(booster_state(schema), schema)
        return _write(path, meta, members, schema=schema)

    return path, head, X, rewrite


def _model_text(text):
    def edit(state, schema):
        state["_handle"] = _json(text)
    return edit


@pytest.mark.slow
def test_lightgbm_text_that_aborts_the_process_is_refused(lightgbm_file):
    import subprocess
    import sys

    path, _, _, rewrite = lightgbm_file
    rewrite(_model_text(ABORTING_TREES))
    # the recipe is live: LightGBM alone ends the process (SIGABRT)
    direct = subprocess.run(
        [sys.executable, "-c", ("from lightgbm.basic import Booster; "
         f"Booster.__new__(Booster).__setstate__({{'_handle': {ABORTING_TREES!r}}})")],
        capture_output=True, timeout=60, check=False)
    assert direct.returncode < 0
    # the loader refuses it, in a child process so that a failure cannot end this one
    loaded = subprocess.run(
        [sys.executable, "-c", ("from skagegender.model import load_model_file\n"
         "try:\n    load_model_file(__import__('sys').argv[1])\n"
         "except ValueError as exc:\n    print(type(exc).__name__, exc)"), str(path)],
        capture_output=True, text=True, timeout=120, check=False)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.startswith("ModelFileError") and str(path) in loaded.stdout
    assert "tree 0 lacks leaf_value" in loaded.stdout


@pytest.mark.parametrize("old, new, match", [
    (r"left_child=(\S+) (\S+) \S+", r"left_child=\1 \2 -9", "out of range"),  # out of bounds
    (r"left_child=(\S+) (\S+) \S+", r"left_child=\1 \2 1", "reached twice"),  # loops
    (r"split_feature=\d+", "split_feature=7", "feature out of range"),
    (r"num_leaves=\d+", "num_leaves=2000000000", "leaf_value has 4 values, not 2000000000"),
])
def test_lightgbm_trees_are_checked(lightgbm_file, old, new, match):
    import re

    path, head, _, rewrite = lightgbm_file
    text, count = re.subn(old, new, head.booster_.model_to_string(), count=1)
    assert count == 1
    rewrite(_model_text(text))
    _refused(path, match)


def test_lightgbm_head_loads_and_predicts_alike(lightgbm_file):
    path, head, X, rewrite = lightgbm_file

    def threads(state, schema):  # settings about the machine: not from a file
        state["params"]["content"]["num_threads"] = _json(100_000)
        schema["content"]["age"]["content"]["content"]["n_jobs"] = _json(100_000)
    rewrite(threads)
    age = load_model_file(path)[0]["age"]
    np.testing.assert_array_equal(age.predict(X), head.predict(X))
    assert age.n_jobs is None and age.booster_.params["num_threads"] is None
