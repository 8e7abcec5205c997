"""The compact age and gender network: SFace at half its width, on 64 x 64 crops, distilled.

SFace is a MobileNet-like chain (``conv_1`` then 13 depthwise/pointwise pairs
``conv_2`` .. ``conv_14``, 568 M multiply-adds on a 112 x 112 crop). The compact
network keeps that chain with half the channels of every layer and runs it on the
aligned crop shrunk to 64 x 64 (:data:`COMPACT_SIZE`): about 47 M multiply-adds,
a twelfth. Its layers start from SFace's own weights, keeping in each layer the
half of the channels with the largest effective scale (batch-norm gain over its
standard deviation times the filter's L1 norm); a new embedding layer
(flatten -> 128, batch norm, PReLU) and two outputs (101 age classes 0..100, a
female logit) sit on top, as in :func:`train_deep`.

It is trained by distillation (:func:`train_compact`): each face's target mixes its
label with a teacher's estimate (the shipped default model's age and 80 % interval
as a Gaussian, its P(female)), on augmented views of UTKFace and degraded copies.
Training is resumable from checkpoints. The exported ONNX network
(:meth:`CompactModel.export_onnx`) takes ``data`` (n, 3, 64, 64) float32 RGB
0..255 and gives ``features`` (n, 230): the 128-d embedding, the 101 age
probabilities and P(female).

Needs torch (``pip install "skagegender[train]"``); running an exported file does not.
"""

import hashlib
import io
import json
import math
import time
import warnings

import numpy as np

from .._utils import atomic_write
from ..embedding import COMPACT, COMPACT_EMBEDDING_WIDTH, shrink_crop
from ._checkpoint import Checkpoint
from ._finetune import N_AGES, _torch

#: Side in pixels of the compact network's input (the aligned crop, shrunk), and the
#: width of its embedding: the packaged network's (``skagegender.embedding``).
COMPACT_SIZE = COMPACT.size
EMBEDDING_WIDTH = COMPACT_EMBEDDING_WIDTH
#: SFace's pointwise layers: (name, output channels, stride of the depthwise conv before it).
_SFACE_CHAIN = (("conv_1", 32, 1),
                ("conv_2", 64, 1), ("conv_3", 128, 2), ("conv_4", 128, 1),
                ("conv_5", 256, 2), ("conv_6", 256, 1), ("conv_7", 512, 2),
                ("conv_8", 512, 1), ("conv_9", 512, 1), ("conv_10", 512, 1),
                ("conv_11", 512, 1), ("conv_12", 512, 1), ("conv_13", 1024, 2),
                ("conv_14", 1024, 1))


def shrink_crops(crops, size=COMPACT_SIZE):
    """Aligned 112 x 112 crops (n, 112, 112, 3) uint8 -> (n, size, size, 3), area-averaged.

    Each crop as :func:`skagegender.embedding.shrink_crop` shrinks it for the network.
    """
    crops = np.asarray(crops)
    out = np.empty((len(crops), size, size, 3), np.uint8)
    for i, crop in enumerate(crops):
        out[i] = shrink_crop(crop, size)
    return out


def _make_network(width=0.5, size=COMPACT_SIZE, init="sface"):
    """The compact network as a torch module: (n, 3, size, size) 0..255 RGB -> three outputs."""
    torch = _torch()
    from torch import nn

    def channels(n):
        return max(8, round(n * width))

    class Block(nn.Sequential):
        def __init__(self, conv, cin, cout, stride, kernel=3, groups=1):
            pad = kernel // 2
            super().__init__(nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False),
                             nn.BatchNorm2d(cout, eps=1e-3), nn.PReLU(cout))
            self.conv_name = conv

    class CompactNet(nn.Module):
        """SFace's chain at ``width`` on ``size`` x ``size`` crops, new embedding and outputs."""

        def __init__(self):
            super().__init__()
            layers, cin = [], 3
            for name, cout, stride in _SFACE_CHAIN:
                cout = channels(cout)
                if name == "conv_1":
                    layers.append(Block(name, cin, cout, stride))
                else:
                    layers.append(Block(f"{name}_dw", cin, cin, stride, groups=cin))
                    layers.append(Block(name, cin, cout, 1, kernel=1))
                cin = cout
            self.trunk = nn.Sequential(*layers)
            side = size // 16
            self.norm = nn.BatchNorm2d(cin, eps=2e-5)
            self.embed = nn.Linear(cin * side * side, EMBEDDING_WIDTH)
            self.embed_norm = nn.BatchNorm1d(EMBEDDING_WIDTH, eps=2e-5)
            self.prelu = nn.PReLU(EMBEDDING_WIDTH)
            self.dropout = nn.Dropout(0.2)
            self.age = nn.Linear(EMBEDDING_WIDTH, N_AGES)
            self.female = nn.Linear(EMBEDDING_WIDTH, 1)

        def forward(self, x):
            x = (x - 127.5) * 0.0078125  # SFace's input scaling
            hidden = self.prelu(self.embed_norm(self.embed(self.norm(self.trunk(x)).flatten(1))))
            out = self.dropout(hidden)
            return hidden, self.age(out), self.female(out)[:, 0]

    if size % 16:
        raise ValueError(f"size must be a multiple of 16, got {size}")
    torch.manual_seed(0)
    net = CompactNet()
    if init == "sface":
        _init_from_sface(net)
    elif init is not None:
        raise ValueError(f"init must be 'sface' or None, got {init!r}")
    return net


def _init_from_sface(net):
    """Copy SFace's weights into ``net``'s trunk, each layer keeping its strongest channels."""
    torch = _torch()

    from ._deep import sface_graph

    _, weights = sface_graph()

    def w(name):
        return np.asarray(weights[name], np.float32)

    def strongest(conv, n):
        gamma, var = w(f"{conv}_batchnorm_gamma"), w(f"{conv}_batchnorm_moving_var")
        filt = np.abs(w(f"{conv}_conv2d_weight_reshaped")).reshape(len(gamma), -1).sum(1)
        score = np.abs(gamma) / np.sqrt(var + 1e-3) * filt
        return np.sort(np.argsort(-score, kind="stable")[:n])

    kept = np.arange(3)
    with torch.no_grad():
        for block in net.trunk:
            conv, norm, prelu = block
            name = block.conv_name
            full = w(f"{name}_conv2d_weight_reshaped")
            if conv.groups > 1:  # depthwise: the channels kept below
                out = kept
                weight = full[out]
            else:
                out = strongest(name, conv.out_channels)
                weight = full[out][:, kept]
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
            for attr, key in (("weight", "gamma"), ("bias", "beta"),
                              ("running_mean", "moving_mean"), ("running_var", "moving_var")):
                getattr(norm, attr).copy_(torch.from_numpy(w(f"{name}_batchnorm_{key}")[out]))
            prelu.weight.copy_(torch.from_numpy(w(f"{name}_relu_gamma").reshape(-1)[out]))
            kept = out


def multiply_adds(net, size=COMPACT_SIZE):
    """Multiply-adds of one forward pass of ``net`` on one ``size`` x ``size`` crop."""
    torch = _torch()
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            total += output.numel() * module.in_channels // module.groups * \
                module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, torch.nn.Linear):
            total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in net.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, 3, size, size))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def _blob(views):
    torch = _torch()
    return torch.from_numpy(np.ascontiguousarray(np.asarray(views).transpose(0, 3, 1, 2),
                                                 dtype=np.float32))


class CompactModel:
    """A compact network trained by :func:`train_compact`.

    Attributes
    ----------
    net : torch.nn.Module
        Eval mode.
    size : int
        Input side in pixels.
    finished : bool
        False when training stopped early (``stop_after_steps``); resume it.
    step : int
    train_seconds : float
    history : list of dict
        One entry per finished epoch (training loss, validation MAE and gender
        accuracy when validation rows were given).
    """

    def __init__(self, net, size, *, finished=True, step=0, train_seconds=0.0, history=()):
        self.net = net.eval()
        self.size = size
        self.finished = finished
        self.step = step
        self.train_seconds = train_seconds
        self.history = list(history)

    def predict(self, crops, *, batch_size=256):
        """(n, 230) float32 of aligned 112 x 112 RGB crops: embedding, age probs, P(female)."""
        torch = _torch()
        out = []
        self.net.eval()
        with torch.no_grad():
            for start in range(0, len(crops), batch_size):
                x = _blob(shrink_crops(crops[start:start + batch_size], self.size))
                hidden, age, female = self.net(x)
                out.append(torch.cat([hidden, age.softmax(1), female.sigmoid()[:, None]], 1))
        return (torch.cat(out).numpy() if out
                else np.zeros((0, EMBEDDING_WIDTH + N_AGES + 1), np.float32))

    def export_onnx(self, path, *, doc="skagegender compact age and gender network",
                    float16=True):
        """Write the network as ONNX (input ``data``, output ``features``); returns the path.

        ``data``: (n, 3, size, size) float32 RGB 0..255 (the aligned crop shrunk with
        area averaging, :func:`shrink_crops`). ``features``: (n, 230), the 128-d
        embedding, 101 age probabilities (ages 0..100) and P(female). With
        ``float16``, weights are stored as float16 and cast to float32 in the graph
        (computed in float32; the runtime folds the casts once, at load).
        """
        import onnx

        torch = _torch()

        class Features(torch.nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, data):
                hidden, age, female = self.net(data)
                return torch.cat([hidden, age.softmax(1), female.sigmoid()[:, None]], 1)

        buffer = io.BytesIO()
        self.net.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            probe = torch.zeros(1, 3, self.size, self.size)
            torch.onnx.export(Features(self.net).eval(), probe, buffer,
                              input_names=["data"], output_names=["features"],
                              dynamic_axes={"data": {0: "batch"}, "features": {0: "batch"}},
                              opset_version=17, dynamo=False, do_constant_folding=True)
        model = onnx.load_from_string(buffer.getvalue())
        if float16:
            _float16_weights(model)
        model.doc_string = doc
        onnx.checker.check_model(model)
        data = model.SerializeToString()
        return atomic_write(path, lambda f: f.write(data), make_parents=True)


def _float16_weights(model):
    """Store a model's float32 weights (more than 16 numbers) as float16, cast back in the graph."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        array = numpy_helper.to_array(init)
        if array.size <= 16:
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(array.astype(np.float16), f"{name}_f16"))
        casts.append(helper.make_node("Cast", [f"{name}_f16"], [name], to=TensorProto.FLOAT,
                                      name=f"{name}_cast"))
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def _views(crops, rows, epoch, size, random_state, augment):
    from ._deep import augment_crop

    if augment:
        views = np.stack([augment_crop(crops[i], [int(random_state), int(epoch), int(i)])
                          for i in rows])
    else:
        views = np.asarray(crops[rows])
    return shrink_crops(views, size)


def _targets(torch, ages, y, teacher_age, teacher_sigma, alpha, sigma):
    """Age target distributions: the label's Gaussian mixed with the teacher's."""
    label = torch.exp(-0.5 * ((ages[None] - y[:, None]) / sigma) ** 2)
    label = label / label.sum(1, keepdim=True)
    known = torch.isfinite(teacher_age)
    t_age = torch.where(known, teacher_age, y)
    t_sigma = torch.where(known, teacher_sigma, torch.full_like(y, sigma))
    teach = torch.exp(-0.5 * ((ages[None] - t_age[:, None]) / t_sigma[:, None]) ** 2)
    teach = teach / teach.sum(1, keepdim=True)
    a = alpha * known.float()
    return (1 - a)[:, None] * label + a[:, None] * teach, (1 - a) * y + a * t_age


def train_compact(crops, age, female, rows, *, teacher_age=None, teacher_sigma=None,
                  teacher_female=None, alpha=0.5, sigma=2.0, width=0.5, size=COMPACT_SIZE,
                  init="sface", epochs=20, batch_size=128, lr=2e-3, augment=True,
                  validation_rows=None, random_state=0, checkpoint_folder=None,
                  checkpoint_every=50, stop_after_steps=None, bf16=True, n_threads=None,
                  verbose=False):
    """Train the compact network on ``crops[rows]``, distilled from a teacher's targets.

    Parameters
    ----------
    crops : ndarray of shape (n, 112, 112, 3), uint8, RGB
        Aligned faces (:meth:`~skagegender.embedding.ArcFaceEmbedder.align`).
    age : ndarray of shape (n,)
    female : ndarray of shape (n,)
        1.0 female, 0.0 male, NaN unknown (no label part in the gender loss).
    rows : index array
        Training rows.
    teacher_age, teacher_sigma, teacher_female : ndarray of shape (n,) or None
        The teacher's age, its spread in years (a Gaussian's sigma) and P(female);
        NaN where it has none (the label alone is the target there). None: no teacher.
    alpha : float in [0, 1], default=0.5
        Share of the teacher in each target (age distribution, expected age, gender).
    sigma : float, default=2.0
        Width in years of the label's Gaussian age distribution.
    width, size, init : network settings
        Channel share of SFace's, input side (a multiple of 16), and ``"sface"`` (start
        from SFace's strongest channels) or None (random).
    epochs, batch_size, lr : training settings
        AdamW, warm-up over the first 5 % of the steps, then cosine decay.
    augment : bool, default=True
        Each epoch trains on fresh augmented views (flip, shift, rotation, worse photos).
    validation_rows : index array or None
        Rows measured after each epoch (MAE of the expected age, gender accuracy), never
        trained on; the numbers go to :attr:`CompactModel.history`.
    random_state : int
    checkpoint_folder : path or None
        The training state is saved there every ``checkpoint_every`` steps and after
        each epoch; a run started again with the same data and settings continues from
        it. A checkpoint of other data or settings is refused (ValueError).
    stop_after_steps : int or None
        Stop (with a checkpoint) once this many steps are done in total.
    bf16 : bool, default=True
        bfloat16 autocast in the training steps (CPU; about 1.5x faster here).
    n_threads : int or None
        torch threads (None: torch's default).
    verbose : bool

    Returns
    -------
    model : CompactModel
    """
    torch = _torch()
    import torch.nn.functional as F

    if n_threads is not None:
        torch.set_num_threads(int(n_threads))
    n = len(crops)
    age = np.asarray(age, np.float32)
    female = np.asarray(female, np.float32)
    rows = np.asarray(rows)
    nan = np.full(n, np.nan, np.float32)
    t_age = nan if teacher_age is None else np.asarray(teacher_age, np.float32)
    t_sigma = nan if teacher_sigma is None else np.asarray(teacher_sigma, np.float32)
    t_female = nan if teacher_female is None else np.asarray(teacher_female, np.float32)
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not len(rows) >= batch_size:
        raise ValueError(f"need at least batch_size={batch_size} training rows, got {len(rows)}")

    net = _make_network(width, size, init)
    steps_per_epoch = len(rows) // batch_size
    total = epochs * steps_per_epoch
    warmup = max(1, total // 20)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)

    fingerprint = hashlib.sha256()
    for array in (rows, age[rows], female[rows], t_age[rows], t_sigma[rows], t_female[rows]):
        fingerprint.update(np.ascontiguousarray(array).tobytes())
    fingerprint.update(np.ascontiguousarray(crops[rows[:: max(1, len(rows) // 500)]]).tobytes())
    config = json.dumps({"data": fingerprint.hexdigest(), "alpha": alpha, "sigma": sigma,
                         "width": width, "size": size, "init": init, "epochs": epochs,
                         "batch_size": batch_size, "lr": lr, "augment": bool(augment), "bf16": bool(bf16),
                         "random_state": random_state}, sort_keys=True)

    checkpoint = Checkpoint(checkpoint_folder, config)
    counters = checkpoint.restore(net, optimizer, random_state)
    step = int(counters.get("step", 0))
    train_seconds = float(counters.get("train_seconds", 0.0))
    history = json.loads(counters.get("history", "[]"))

    def save():
        checkpoint.save(net, optimizer, step=step, train_seconds=train_seconds,
                        history=json.dumps(history))

    ages = torch.arange(N_AGES, dtype=torch.float32)
    model = CompactModel(net, size, finished=False, step=step, train_seconds=train_seconds,
                         history=history)
    while step < total:
        epoch, position = divmod(step, steps_per_epoch)
        order = np.random.default_rng([int(random_state), 11, epoch]).permutation(len(rows))
        net.train()
        started = printed = time.perf_counter()
        losses = []
        while position < steps_per_epoch and step < total:
            batch = rows[np.sort(order[position * batch_size:(position + 1) * batch_size])]
            x = _blob(_views(crops, batch, epoch, size, random_state, augment))
            y = torch.from_numpy(age[batch])
            g = torch.from_numpy(female[batch])
            tg = torch.from_numpy(t_female[batch])
            target, mean_age = _targets(torch, ages, y, torch.from_numpy(t_age[batch]),
                                        torch.from_numpy(t_sigma[batch]), alpha, sigma)
            known_t = torch.isfinite(tg)
            a = alpha * known_t.float()
            soft_g = torch.where(torch.isfinite(g), (1 - a) * torch.nan_to_num(g)
                                 + a * torch.nan_to_num(tg), torch.nan_to_num(tg, nan=0.5))
            g_weight = (torch.isfinite(g) | known_t).float()
            factor = min(1.0, (step + 1) / warmup) * 0.5 * (
                1 + math.cos(math.pi * min(1.0, max(0, step - warmup) / max(1, total - warmup))))
            for group in optimizer.param_groups:
                group["lr"] = lr * factor
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(bf16)):
                _, age_logits, female_logit = net(x)
            log_p = F.log_softmax(age_logits.float(), 1)
            female_logit = female_logit.float()
            expected = (log_p.exp() * ages).sum(1)
            loss = (F.kl_div(log_p, target, reduction="batchmean")
                    + 0.05 * (expected - mean_age).abs().mean()
                    + (F.binary_cross_entropy_with_logits(female_logit, soft_g, reduction="none")
                       * g_weight).mean())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
            position += 1
            now = time.perf_counter()
            train_seconds += now - started
            started = now
            if checkpoint_every and step % checkpoint_every == 0:
                save()
            if verbose and now - printed > 60:
                printed = now
                print(f"compact: epoch {epoch + 1}/{epochs} step {position}/{steps_per_epoch} "
                      f"loss {np.mean(losses[-50:]):.3f}", flush=True)
            if stop_after_steps is not None and step >= stop_after_steps:
                break
        if position == steps_per_epoch:
            entry = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else None,
                     "train_seconds": round(train_seconds, 1)}
            if validation_rows is not None and len(validation_rows):
                model.step = step
                out = model.predict(crops[np.asarray(validation_rows)])
                pred = out[:, EMBEDDING_WIDTH:EMBEDDING_WIDTH + N_AGES] @ np.arange(N_AGES)
                entry["val_mae"] = float(np.mean(np.abs(pred - age[validation_rows])))
                known = np.isfinite(female[validation_rows])
                entry["val_gender"] = float(np.mean(
                    (out[known, -1] > 0.5) == (female[validation_rows][known] > 0.5)))
            history.append(entry)
            if verbose:
                print(f"compact: {entry}", flush=True)
            save()
        if stop_after_steps is not None and step >= stop_after_steps:
            save()
            break
    net.eval()
    return CompactModel(net, size, finished=step >= total, step=step,
                        train_seconds=train_seconds, history=history)
