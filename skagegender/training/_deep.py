"""Fine-tune SFace for age and gender at a chosen depth, from the embedding layer to the whole net.

SFace (a MobileNet-like chain of 27 depthwise/pointwise conv blocks, ``conv_1`` ..
``conv_14``, each batch norm + PReLU, then ``bn1`` -> flatten -> the ``pre_fc1``
linear map -> the ``fc1`` batch norm) is rebuilt here as a torch module from the
onnxruntime-ready conversion of the shipped ONNX file, node by node, with SFace's own
weights (:class:`SFaceTorch`; equal to onnxruntime within float rounding). On top sit
a PReLU, dropout and two outputs, as in :func:`train_finetuned_layer`: 101 age
classes (0..100, trained to a Gaussian label distribution plus an L1 term on the
expected age) and a female logit.

``depth`` chooses what trains (:data:`DEPTHS`): the embedding layer only
(``"layer"``, the shipped design), the last conv stage too (``"last-stage"``:
``conv_13`` and ``conv_14``, the 7 x 7 stage), the 14 x 14 stage too (``"more"``:
``conv_7`` ..), or everything (``"whole"``). The frozen part below a cut runs once
per training view and its outputs are kept on disk, so the shallow depths cost
little. Training is resumable from checkpoints; the trained network is exported to
ONNX (input ``data``: aligned 112 x 112 RGB crops, NCHW float32 0..255; output
``probs``: 101 age probabilities and P(female)).

Needs torch (``pip install "skagegender[train]"``); running an exported file does not.
"""

import hashlib
import io
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np

from .._utils import atomic_write
from ._checkpoint import Checkpoint
from ._finetune import N_AGES, _torch

#: What each depth trains: the activation below which SFace stays frozen (None: nothing).
DEPTHS = {
    "layer": "conv_14_relu",
    "last-stage": "conv_12_relu",
    "more": "conv_6_relu",
    "whole": None,
}
#: SFace's embedding output, the input of the age and gender outputs.
EMBEDDING = "fc1"


def _check_depth(depth):
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth!r}")
    return DEPTHS[depth]


def sface_graph():
    """SFace's nodes and weights from the onnxruntime-ready conversion (sha256 checked).

    Returns
    -------
    nodes : list of (op_type, name, inputs, outputs, attributes)
        In graph order; weight reshapes and constants already folded into ``weights``.
    weights : dict of str -> ndarray
    """
    import onnx
    from onnx import helper, numpy_helper

    from ..embedding import SFACE, converted_model

    model = onnx.load(str(converted_model(SFACE, symbolic_dims={0: "batch"})))
    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Reshape" and all(i in weights for i in node.input):
            weights[node.output[0]] = weights[node.input[0]].reshape(
                weights[node.input[1]].astype(np.int64))
        elif node.op_type == "Constant":
            weights[node.output[0]] = numpy_helper.to_array(attrs["value"])
        else:
            nodes.append((node.op_type, node.name, list(node.input), list(node.output), attrs))
    return nodes, weights


def _frozen_norm_class():
    from torch.nn.modules.batchnorm import _BatchNorm

    class FrozenNorm(_BatchNorm):
        """A batch norm for (N, C) and (N, C, H, W) input (run with its running statistics)."""

        def _check_input_dim(self, input):
            if input.dim() not in (2, 4):
                raise ValueError(f"expected 2D or 4D input, got {input.dim()}D")

    return FrozenNorm


def _FrozenNorm(n, eps):
    global _FrozenNormClass
    if _FrozenNormClass is None:
        _FrozenNormClass = _frozen_norm_class()
    return _FrozenNormClass(n, eps=eps)


_FrozenNormClass = None


def _node_module(op, inputs, attrs, weights):
    """The torch module of one SFace node (its weights copied), or None for an identity."""
    torch = _torch()
    from torch import nn

    def tensor(name):
        return torch.from_numpy(np.array(weights[name], dtype=np.float32))

    if op == "Conv":
        w = tensor(inputs[1])
        pads = attrs.get("pads", [0, 0, 0, 0])
        if pads[:2] != pads[2:]:
            raise ValueError(f"asymmetric padding {pads} is not supported")
        group = int(attrs.get("group", 1))
        conv = nn.Conv2d(w.shape[1] * group, w.shape[0], tuple(w.shape[2:]),
                         stride=tuple(attrs.get("strides", [1, 1])), padding=tuple(pads[:2]),
                         dilation=tuple(attrs.get("dilations", [1, 1])), groups=group,
                         bias=len(inputs) > 2)
        with torch.no_grad():
            conv.weight.copy_(w)
            if len(inputs) > 2:
                conv.bias.copy_(tensor(inputs[2]))
        return conv
    if op == "BatchNormalization":
        gamma = tensor(inputs[1])
        norm = _FrozenNorm(len(gamma), eps=float(attrs.get("epsilon", 1e-5)))
        with torch.no_grad():
            norm.weight.copy_(gamma)
            norm.bias.copy_(tensor(inputs[2]))
            norm.running_mean.copy_(tensor(inputs[3]))
            norm.running_var.copy_(tensor(inputs[4]))
        return norm
    if op == "PRelu":
        slope = tensor(inputs[1]).reshape(-1)
        prelu = nn.PReLU(len(slope))
        with torch.no_grad():
            prelu.weight.copy_(slope)
        return prelu
    if op == "Gemm":
        if attrs.get("transA", 0) or not attrs.get("transB", 0) or attrs.get("alpha", 1.0) != 1.0 \
                or attrs.get("beta", 1.0) != 1.0:
            raise ValueError("only Gemm with transB=1, alpha=beta=1 is supported")
        w = tensor(inputs[1])
        linear = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            linear.weight.copy_(w)
            linear.bias.copy_(tensor(inputs[2]))
        return linear
    if op in ("Dropout", "Flatten", "Sub", "Mul"):
        return None
    raise ValueError(f"SFace node type {op!r} is not supported")


def _make_sface(start=None, stop=EMBEDDING):
    """SFace from activation ``start`` (None: the input ``data``) to activation ``stop``."""
    _torch()
    from torch import nn

    nodes, weights = sface_graph()
    names = [outputs[0] for _, _, _, outputs, _ in nodes]
    for name in (start, stop):
        if name is not None and name not in names:
            raise ValueError(f"SFace has no activation named {name!r}")
    first = 0 if start is None else names.index(start) + 1
    last = names.index(stop) + 1
    if first > last:
        raise ValueError(f"{start!r} comes after {stop!r} in SFace")

    class SFaceTorch(nn.Module):
        """SFace's nodes ``first..last`` as torch modules (dropout is the identity)."""

        def __init__(self):
            super().__init__()
            self.start, self.stop = start or "data", stop
            self.steps = []
            self.layers = nn.ModuleDict()
            for op, name, inputs, outputs, attrs in nodes[first:last]:
                module = _node_module(op, inputs, attrs, weights)
                if module is not None:
                    self.layers[name] = module
                constant = None
                if op in ("Sub", "Mul"):
                    constant = float(np.asarray(weights[inputs[1]]).reshape(()))
                self.steps.append((op, name, inputs[0], outputs[0], constant,
                                   int(attrs.get("axis", 1))))
            self.eval()

        def forward(self, x):
            values = {self.start: x}
            for op, name, source, target, constant, axis in self.steps:
                value = values[source]
                if op == "Sub":
                    value = value - constant
                elif op == "Mul":
                    value = value * constant
                elif op == "Flatten":
                    value = value.flatten(axis)
                elif op != "Dropout":
                    value = self.layers[name](value)
                values[target] = value
            return values[self.stop]

        def train(self, mode=True):
            # SFace's batch-norm statistics stay frozen and its dropout off: gradients
            # still reach every weight.
            return super().train(False)

    return SFaceTorch()


def sface_torch(start=None, stop=EMBEDDING):
    """SFace (or a slice of it) as a torch module, with the shipped weights.

    Parameters
    ----------
    start : str or None, default=None
        The activation the module takes as input (None: the aligned crops, ``data``:
        (n, 3, 112, 112) float32 RGB 0..255).
    stop : str, default="fc1"
        The activation it returns (``"fc1"``: the 128-d embedding before L2
        normalisation).

    Returns
    -------
    module : torch.nn.Module
        Always in eval mode (batch-norm statistics frozen, dropout off).
    """
    return _make_sface(start, stop)


def _make_network(depth):
    """(frozen SFace part or None, trained network: SFace's rest + age and female outputs)."""
    torch = _torch()
    from torch import nn

    cut = _check_depth(depth)

    class DeepAgeGender(nn.Module):
        def __init__(self):
            super().__init__()
            self.sface = _make_sface(cut, EMBEDDING)
            width = 128
            self.prelu = nn.PReLU(width)
            self.dropout = nn.Dropout(0.2)
            self.age = nn.Linear(width, N_AGES)
            self.female = nn.Linear(width, 1)

        def forward(self, x):
            hidden = self.dropout(self.prelu(self.sface(x)))
            return self.age(hidden), self.female(hidden)[:, 0]

    frozen = None if cut is None else _make_sface(None, cut)
    if frozen is not None:
        for parameter in frozen.parameters():
            parameter.requires_grad_(False)
    torch.manual_seed(0)  # the new outputs start the same for every depth
    return frozen, DeepAgeGender()


class _Probabilities:
    """Wraps (frozen, trained) into one module: crops -> 101 age probabilities + P(female)."""

    def __new__(cls, frozen, trained):
        torch = _torch()

        class Probs(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.frozen = frozen
                self.trained = trained

            def forward(self, data):
                x = data if self.frozen is None else self.frozen(data)
                age_logits, female_logit = self.trained(x)
                return torch.cat([age_logits.softmax(1), female_logit.sigmoid()[:, None]], 1)

        return Probs().eval()


class DeepModel:
    """A network trained by :func:`train_deep`: crops in, age probabilities and P(female) out.

    Attributes
    ----------
    depth : str
    frozen : torch.nn.Module or None
        SFace below the cut, with the shipped weights.
    trained : torch.nn.Module
        The trained part (eval mode).
    finished : bool
        False when training stopped early (``stop_after_steps``); resume it.
    step : int
        Training steps done.
    train_seconds : float
        Wall time spent in training steps (all pieces of a resumed run).
    cache_seconds : float
        Wall time spent computing the frozen part's outputs (this call).
    """

    def __init__(self, depth, frozen, trained, *, finished=True, step=0, train_seconds=0.0,
                 cache_seconds=0.0):
        self.depth = depth
        self.frozen = frozen
        self.trained = trained.eval()
        self.finished = finished
        self.step = step
        self.train_seconds = train_seconds
        self.cache_seconds = cache_seconds

    def network(self):
        """The whole network as one torch module (eval mode): ``data`` -> (n, 102)."""
        return _Probabilities(self.frozen, self.trained)

    def predict(self, crops, *, batch_size=64):
        """(n, 102) float32: 101 age probabilities and P(female) of aligned RGB crops.

        Parameters
        ----------
        crops : ndarray of shape (n, 112, 112, 3), uint8, RGB
        """
        torch = _torch()
        net = self.network()
        out = []
        with torch.no_grad():
            for start in range(0, len(crops), batch_size):
                out.append(net(_blob(crops[start:start + batch_size])))
        return torch.cat(out).numpy() if out else np.zeros((0, N_AGES + 1), np.float32)

    def export_onnx(self, path, *, doc=None):
        """Write the whole network as ONNX (input ``data``, output ``probs``); returns the path.

        ``data``: (n, 3, 112, 112) float32, RGB, 0..255, aligned on the ArcFace
        template (as SFace takes it). ``probs``: (n, 102), the 101 age
        probabilities (ages 0..100) and P(female). Weights are float32.
        """
        import onnx

        from ..embedding import ALIGNED_SIZE

        torch = _torch()
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated but needs no extra package; the
            # exported graph is compared with torch in the tests and the benchmark.
            warnings.simplefilter("ignore", DeprecationWarning)
            probe = torch.zeros(1, 3, ALIGNED_SIZE, ALIGNED_SIZE)
            torch.onnx.export(self.network(), probe, buffer,
                              input_names=["data"], output_names=["probs"],
                              dynamic_axes={"data": {0: "batch"}, "probs": {0: "batch"}},
                              opset_version=17, dynamo=False)
        model = onnx.load_from_string(buffer.getvalue())
        model.doc_string = doc or f"SFace fine-tuned for age and gender (depth {self.depth})"
        onnx.checker.check_model(model)
        data = model.SerializeToString()
        return atomic_write(path, lambda f: f.write(data), make_parents=True)


def _blob(crops):
    """uint8 (n, 112, 112, 3) RGB crops -> float32 NCHW tensor, 0..255."""
    torch = _torch()
    return torch.from_numpy(np.ascontiguousarray(np.asarray(crops).transpose(0, 3, 1, 2),
                                                 dtype=np.float32))


def augment_crop(crop, random_state):
    """A training view of an aligned RGB crop: flip, small shift/scale/rotation, worse photo.

    Randomly: horizontal flip (50 %); scale 0.93-1.07, shift up to 4 px, rotation up to
    5 degrees (the border replicated); :func:`degrade_photo` (40 %, which itself makes
    30 % of its copies grayscale); grayscale (10 % more).

    Parameters
    ----------
    crop : ndarray of shape (112, 112, 3), uint8, RGB
    random_state : int, sequence of int or numpy Generator

    Returns
    -------
    view : ndarray of shape (112, 112, 3), uint8, RGB
    """
    import cv2

    from ._augment import degrade_photo

    rng = np.random.default_rng(random_state)
    img = crop[:, ::-1] if rng.random() < 0.5 else crop
    size = img.shape[0]
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-5, 5),
                                     rng.uniform(0.93, 1.07))
    matrix[:, 2] += rng.uniform(-4, 4, size=2)
    img = cv2.warpAffine(np.ascontiguousarray(img), matrix, (size, size),
                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.4:
        img = degrade_photo(img[..., ::-1], rng)[..., ::-1]  # degrade_photo works in BGR
    if rng.random() < 0.1:
        img = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2).round().astype(np.uint8)
    return np.ascontiguousarray(img, dtype=np.uint8)


def training_views(crops, rows, epoch, *, random_state=0, augment=True):
    """The crops one epoch trains on: ``crops[rows]``, each augmented with its own seed.

    Row ``i``'s view in epoch ``e`` depends only on ``(random_state, e, i)``, so every
    depth sees the same inputs. Without ``augment``, the crops as they are.

    Returns
    -------
    views : ndarray of shape (len(rows), 112, 112, 3), uint8
    """
    rows = np.asarray(rows)
    if not augment:
        return np.asarray(crops[rows])
    return np.stack([augment_crop(crops[i], [int(random_state), int(epoch), int(i)])
                     for i in rows]) if len(rows) else np.zeros((0, *crops.shape[1:]), np.uint8)


def _frozen_chunk(crops, cut):
    from ..embedding import sface_maps

    return sface_maps(crops, layer=cut).astype(np.float16)


def _frozen_outputs(crops, rows, epoch, cut, folder, fingerprint, *, random_state, augment,
                    n_jobs, chunk=256):
    """SFace up to ``cut`` (onnxruntime) on an epoch's training views, cached as float16 npy."""
    from joblib import Parallel, delayed

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(repr((fingerprint, cut, int(epoch) if augment else -1, random_state,
                               bool(augment))).encode()).hexdigest()[:20]
    path = folder / f"{cut}-{key}.npy"
    if path.is_file():
        try:
            maps = np.load(path, mmap_mode="r", allow_pickle=False)
            if maps.dtype == np.float16 and len(maps) == len(rows):
                return maps, 0.0
        except (OSError, ValueError):
            pass  # damaged: computed again
    start = time.perf_counter()
    parts = range(0, len(rows), chunk)

    def views(i):
        return training_views(crops, rows[i:i + chunk], epoch, random_state=random_state,
                              augment=augment)

    tmp = path.with_name(path.name + ".part")
    out = None
    for i, maps in zip(parts, Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_frozen_chunk)(views(i), cut) for i in parts)):
        if out is None:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16,
                                            shape=(len(rows), *maps.shape[1:]))
        out[i:i + len(maps)] = maps
    out.flush()
    del out
    tmp.replace(path)
    return np.load(path, mmap_mode="r", allow_pickle=False), time.perf_counter() - start


def _lr_factor(step, total, warmup):
    """Linear warm-up, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_deep(crops, age, female, rows=None, *, depth="layer", init=None, epochs=3, sigma=2.0,
               lr=3e-5, layer_lr=None, head_lr=None, batch_size=32, augment=True,
               view_offset=0, random_state=0, cache_folder=None, checkpoint_folder=None, checkpoint_every=50,
               stop_after_steps=None, bf16=True, n_threads=None, n_jobs=1, callback=None,
               verbose=False):
    """Fine-tune SFace for age and gender on ``crops[rows]`` at a given depth.

    Parameters
    ----------
    crops : ndarray of shape (n, 112, 112, 3), uint8, RGB
        Aligned faces (:meth:`~skagegender.embedding.ArcFaceEmbedder.align`).
    age : ndarray of shape (n,)
    female : ndarray of shape (n,)
        1.0 female, 0.0 male, NaN unknown (no gender loss).
    rows : index array or None
        Training rows (all by default).
    depth : {"layer", "last-stage", "more", "whole"}
        What trains (:data:`DEPTHS`): SFace above the cut, the PReLU and the outputs.
    init : DeepModel or None
        Start from this model's weights where the names match (e.g. a ``"layer"``
        model, to train deeper from it); None starts from SFace with new outputs.
    epochs, sigma, batch_size : training settings
        ``sigma``: width in years of the Gaussian age label.
    lr, layer_lr, head_lr : float
        AdamW learning rates of the conv layers, the embedding layer (``bn1`` ..
        ``fc1``) and the new PReLU and outputs. Defaults: ``layer_lr`` 3e-4 and
        ``head_lr`` 3e-3 without ``init``, both 1e-4 with it. Warm-up over 10 % of the
        steps (5 % with ``init``), then cosine decay.
    augment : bool, default=True
        Train on :func:`training_views` (a fresh view of each face each epoch).
    view_offset : int, default=0
        Epoch ``e`` trains on the views of epoch ``e + view_offset`` (e.g. the number
        of epochs ``init`` was trained, so that a continued run sees new views).
    random_state : int
    cache_folder : path or None
        Where the frozen part's outputs on each epoch's views are kept (float16
        ``.npy``); needed for every depth but ``"whole"``.
    checkpoint_folder : path or None
        Where the training state is saved every ``checkpoint_every`` steps and after
        each epoch; a run started again with the same data and settings continues
        from it. A checkpoint of other data or settings is refused (ValueError).
    stop_after_steps : int or None
        Stop (with a checkpoint) once this many steps are done in total; the model
        returned then has ``finished=False``.
    bf16 : bool, default=True
        bfloat16 autocast in the training steps (CPU).
    n_threads : int or None
        torch threads (None keeps torch's setting).
    n_jobs : int, default=1
        Processes computing the frozen outputs.
    callback : callable or None
        ``callback(epoch, model)`` after each epoch.

    Returns
    -------
    DeepModel
    """
    torch = _torch()
    import torch.nn.functional as F

    cut = _check_depth(depth)
    if n_threads is not None:
        torch.set_num_threads(int(n_threads))
    crops = np.asarray(crops)
    from ..embedding import ALIGNED_SIZE

    if crops.ndim != 4 or crops.shape[1:] != (ALIGNED_SIZE, ALIGNED_SIZE, 3) \
            or crops.dtype != np.uint8:
        raise ValueError(f"crops must be uint8 of shape (n, {ALIGNED_SIZE}, {ALIGNED_SIZE}, 3), "
                         f"got {crops.dtype} {crops.shape}")
    age = np.asarray(age, dtype=np.float32)
    female = np.asarray(female, dtype=np.float32)
    rows = np.arange(len(crops)) if rows is None else np.asarray(rows)
    if len(rows) < batch_size:
        raise ValueError(f"{len(rows)} training faces: need at least batch_size={batch_size}")
    if cut is not None and cache_folder is None:
        raise ValueError(f"depth {depth!r} needs a cache_folder for the frozen outputs")
    if layer_lr is None:
        layer_lr = 3e-4 if init is None else 1e-4
    if head_lr is None:
        head_lr = 10 * layer_lr if init is None else layer_lr
    frozen, net = _make_network(depth)
    if init is not None:
        missing = set(init.trained.state_dict()) - set(net.state_dict())
        if missing:
            raise ValueError(f"init has weights this depth does not train: {sorted(missing)[:3]}")
        net.load_state_dict(init.trained.state_dict(), strict=False)

    steps_per_epoch = len(rows) // batch_size
    total = epochs * steps_per_epoch
    warmup = max(1, int((0.1 if init is None else 0.05) * total))
    layer_names = ("bn1", "pre_fc1", "fc1")
    groups = {"conv": [], "layer": [], "head": []}
    for name, parameter in net.named_parameters():
        if name.startswith("sface."):
            groups["layer" if name.split(".")[2] in layer_names else "conv"].append(parameter)
        else:
            groups["head"].append(parameter)
    base_lr = {"conv": lr, "layer": layer_lr, "head": head_lr}
    optimizer = torch.optim.AdamW(
        [{"params": groups[k], "lr": base_lr[k]} for k in groups if groups[k]],
        weight_decay=1e-4)
    bases = [base_lr[k] for k in groups if groups[k]]

    fingerprint = hashlib.sha256()
    fingerprint.update(np.ascontiguousarray(crops[rows]).tobytes())
    fingerprint.update(age[rows].tobytes())
    fingerprint.update(female[rows].tobytes())
    config = json.dumps({
        "data": fingerprint.hexdigest(), "depth": depth, "epochs": epochs, "sigma": sigma,
        "lr": [lr, layer_lr, head_lr], "batch_size": batch_size, "augment": bool(augment),
        "view_offset": int(view_offset),
        "random_state": random_state, "bf16": bool(bf16),
        "init": None if init is None else _state_digest(init.trained)}, sort_keys=True)

    checkpoint = Checkpoint(checkpoint_folder, config)
    counters = checkpoint.restore(net, optimizer, random_state)
    step = int(counters.get("step", 0))
    train_seconds = float(counters.get("train_seconds", 0.0))

    def save():
        checkpoint.save(net, optimizer, step=step, train_seconds=train_seconds)

    ages = torch.arange(N_AGES, dtype=torch.float32)
    model = DeepModel(depth, frozen, net, finished=False, step=step,
                      train_seconds=train_seconds)
    cache_seconds = 0.0
    while step < total:
        epoch, position = divmod(step, steps_per_epoch)
        order = np.random.default_rng([int(random_state), 7, epoch]).permutation(len(rows))
        if cut is not None:
            maps, seconds = _frozen_outputs(crops, rows, epoch + view_offset, cut, cache_folder,
                                            fingerprint.hexdigest(), random_state=random_state,
                                            augment=augment, n_jobs=n_jobs)
            cache_seconds += seconds
            if verbose and seconds:
                print(f"{depth}: frozen outputs of epoch {epoch + 1} in {seconds:.0f} s",
                      flush=True)
        net.train()
        started = printed = time.perf_counter()
        while position < steps_per_epoch and step < total:
            batch = np.sort(order[position * batch_size:(position + 1) * batch_size])
            if cut is None:
                x = _blob(training_views(crops, rows[batch], epoch + view_offset,
                                         random_state=random_state, augment=augment))
            else:
                x = torch.from_numpy(np.asarray(maps[batch], dtype=np.float32))
            y = torch.from_numpy(age[rows[batch]])
            g = torch.from_numpy(female[rows[batch]])
            factor = _lr_factor(step, total, warmup)
            for group, base in zip(optimizer.param_groups, bases):
                group["lr"] = base * factor
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(bf16)):
                age_logits, female_logit = net(x)
            age_logits, female_logit = age_logits.float(), female_logit.float()
            target = torch.exp(-0.5 * ((ages[None] - y[:, None]) / sigma) ** 2)
            target = target / target.sum(1, keepdim=True)
            log_p = age_logits.log_softmax(1)
            loss = (F.kl_div(log_p, target, reduction="batchmean")
                    + 0.1 * ((log_p.exp() * ages).sum(1) - y).abs().mean())
            known = ~torch.isnan(g)
            if known.any():
                loss = loss + F.binary_cross_entropy_with_logits(female_logit[known], g[known])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            position += 1
            if step % 20 == 0 and verbose:
                now = time.perf_counter()
                print(f"{depth}: step {step}/{total} loss {loss.item():.3f} "
                      f"({(now - printed) / 20:.2f} s/step)", flush=True)
                printed = now
            stop = stop_after_steps is not None and step >= stop_after_steps
            if step % checkpoint_every == 0 or position == steps_per_epoch or stop:
                train_seconds += time.perf_counter() - started
                started = time.perf_counter()
                save()
            if stop and step < total:
                net.eval()
                model.step, model.train_seconds, model.cache_seconds = (
                    step, train_seconds, cache_seconds)
                return model
        net.eval()
        model.step, model.train_seconds, model.cache_seconds = step, train_seconds, cache_seconds
        if callback is not None and position == steps_per_epoch:
            callback(epoch, model)
    model.finished = True
    return model


def _state_digest(module):
    """sha256 of a module's weights (identifies an ``init`` in the checkpoint settings)."""
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def aligned_crops(name, items, folder, *, n_jobs=1, chunk=64, verbose=True):
    """Aligned 112 x 112 RGB crops of each item's face, computed once and kept in ``folder``.

    Faces are chosen and aligned as ``ArcFaceEmbedder()`` does
    (:meth:`~skagegender.embedding.ArcFaceEmbedder.align`); items are image paths or
    ``(path, seed)`` pairs for :func:`degrade_photo` copies, as in :func:`frozen_maps`.
    Kept by :func:`~skagegender.training.cached_rows` as ``folder/{name}_crops.npy``
    (uint8); a later call with the same items, unchanged on disk, reads them back.

    Returns
    -------
    crops : ndarray of shape (n, 112, 112, 3), uint8, RGB
        Zeros where no face was found.
    found : ndarray of shape (n,), bool
    """
    from ..embedding import ALIGNED_SIZE
    from ._maps import aligned_chunk, cached_rows

    return cached_rows(f"{name}_crops", items, folder, aligned_chunk,
                       row_shape=(ALIGNED_SIZE, ALIGNED_SIZE, 3), dtype=np.uint8,
                       n_jobs=n_jobs, chunk=chunk, verbose=verbose, what="crops")
