"""Fine-tune SFace's embedding layer for age and gender on frozen ``conv_14_relu`` maps.

SFace keeps where on the face each activation sits up to ``conv_14_relu``
(1024 x 7 x 7); its embedding layer (``bn1`` -> flatten -> a 50,176 x 128 linear map
-> ``fc1`` batch norm) is the only part that mixes positions. The layer trained here
starts from SFace's own weights for that part and adds two outputs: 101 age classes
(0..100, trained to a Gaussian label distribution plus an L1 term on the expected
age) and a female logit. The exported ONNX file (input ``maps``, output ``probs``:
101 age probabilities and P(female)) is what ``ArcFaceEmbedder(layers=
"age-gender-finetuned")`` runs; :meth:`FineTunedLayer.weights` gives the same layer as
the numbers a model file stores and ``ArcFaceEmbedder(finetuned_weights=...)`` runs.

Training needs torch (``pip install "skagegender[train]"``); predicting never does.
"""

import io
import warnings
from pathlib import Path

import numpy as np

#: Classes of the age output: the ages 0..100.
N_AGES = 101
#: SFace activation the layer reads.
MAP_LAYER = "conv_14_relu"
#: Shape of one face's maps.
MAP_SHAPE = (1024, 7, 7)
#: Faces per step of :func:`train_finetuned_layer` by default: the fewest training
#: faces it takes.
LAYER_BATCH_SIZE = 128


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Training the fine-tuned SFace layer needs torch: "
            'pip install "skagegender[train]"') from exc
    return torch


def _make_module(weights, width=128):
    """bn1 -> flatten -> linear -> fc1 batch norm -> PReLU -> (101 age logits, female logit)."""
    torch = _torch()
    from torch import nn

    def batchnorm(cls, name, n):
        layer = cls(n, eps=2e-5)
        with torch.no_grad():
            for attr, key in (("weight", "gamma"), ("bias", "beta"),
                              ("running_mean", "moving_mean"), ("running_var", "moving_var")):
                getattr(layer, attr).copy_(torch.from_numpy(np.array(weights[f"{name}_{key}"])))
        return layer

    class FineTunedEmbedding(nn.Module):
        def __init__(self):
            super().__init__()
            linear = nn.Linear(int(np.prod(MAP_SHAPE)), width)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(np.array(
                    weights["pre_fc1_weight_dequantized"])))
                linear.bias.copy_(torch.from_numpy(np.array(weights["pre_fc1_bias_dequantized"])))
            self.body = nn.Sequential(
                batchnorm(nn.BatchNorm2d, "bn1", MAP_SHAPE[0]), nn.Flatten(), linear,
                batchnorm(nn.BatchNorm1d, "fc1", width), nn.PReLU(width), nn.Dropout(0.2),
            )
            self.age = nn.Linear(width, N_AGES)
            self.female = nn.Linear(width, 1)

        def forward(self, maps):
            hidden = self.body(maps)
            return self.age(hidden), self.female(hidden)[:, 0]

    return FineTunedEmbedding()


def _probabilities(module, maps):
    """The exported output: softmax over the 101 ages, then sigmoid of the female logit."""
    torch = _torch()
    age_logits, female_logit = module(maps)
    return torch.cat([age_logits.softmax(1), female_logit.sigmoid()[:, None]], 1)


class FineTunedLayer:
    """A trained layer: its outputs on maps, its weights, and its export as an ONNX file.

    Made by :func:`train_finetuned_layer`; ``module`` is the torch module (eval mode).
    :meth:`weights` gives what a model file stores and
    ``ArcFaceEmbedder(finetuned_weights=...)`` runs.
    """

    def __init__(self, module):
        self.module = module.eval()

    def outputs(self, maps, rows=None, *, batch_size=512):
        """(n, 102) float32: the 101 age probabilities and P(female), as the ONNX file gives.

        Parameters
        ----------
        maps : ndarray of shape (n_maps, 1024, 7, 7)
        rows : index array or None
            Which maps (all by default).
        """
        torch = _torch()
        rows = np.arange(len(maps)) if rows is None else np.asarray(rows)
        out = []
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                x = torch.from_numpy(np.asarray(maps[rows[start:start + batch_size]],
                                                dtype=np.float32))
                out.append(_probabilities(self.module, x))
        return torch.cat(out).numpy() if out else np.zeros((0, N_AGES + 1), np.float32)

    def weights(self):
        """The layer's numbers as :class:`~skagegender.embedding.FineTunedWeights`.

        Both batch norms (``bn1`` before the linear map, ``fc1`` after it) are
        folded into the linear map, in float64, which is then stored as float16;
        dropout is the identity at inference.

        Returns
        -------
        weights : FineTunedWeights

        Raises
        ------
        ValueError
            When a folded weight does not fit float16 (a diverged training).
        """
        from ..embedding import FineTunedWeights

        def array(tensor):
            return tensor.detach().cpu().numpy().astype(np.float64)

        def fold(norm):  # y = x * scale + shift
            scale = array(norm.weight) / np.sqrt(array(norm.running_var) + norm.eps)
            return scale, array(norm.bias) - array(norm.running_mean) * scale

        bn1, _, linear, fc1, prelu = list(self.module.body)[:5]
        positions = int(np.prod(MAP_SHAPE[1:]))
        scale1, shift1 = (np.repeat(part, positions) for part in fold(bn1))
        scale2, shift2 = fold(fc1)
        weight, bias = array(linear.weight), array(linear.bias)
        hidden_weight = (weight * scale1[None, :]) * scale2[:, None]
        hidden_bias = (weight @ shift1 + bias) * scale2 + shift2
        if np.abs(hidden_weight).max() >= np.finfo(np.float16).max:
            raise ValueError("the trained layer's folded weights overflow float16")
        module = self.module
        return FineTunedWeights({
            "hidden_weight": np.ascontiguousarray(hidden_weight.T, dtype=np.float16),
            "hidden_bias": hidden_bias.astype(np.float32),
            "prelu_slope": array(prelu.weight).astype(np.float32),
            "output_weight": np.ascontiguousarray(np.concatenate(
                [array(module.age.weight), array(module.female.weight)]).T, dtype=np.float32),
            "output_bias": np.concatenate([array(module.age.bias),
                                           array(module.female.bias)]).astype(np.float32),
        })

    def export_onnx(self, path, *, doc="SFace embedding layer fine-tuned for age and gender"):
        """Write the layer as ONNX (input ``maps``, output ``probs``), weights as float16.

        Returns the path.
        """
        import onnx
        from onnx import helper, numpy_helper

        torch = _torch()
        module = self.module

        class Probs(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = module

            def forward(self, maps):
                return _probabilities(self.inner, maps)

        buffer = io.BytesIO()
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated but needs no extra package; the
            # graph (matmuls, batch norms, softmax) is checked below and in the tests.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(Probs().eval(), torch.zeros(1, *MAP_SHAPE), buffer,
                              input_names=["maps"], output_names=["probs"],
                              dynamic_axes={"maps": {0: "batch"}, "probs": {0: "batch"}},
                              opset_version=17, dynamo=False)
        model = onnx.load_from_string(buffer.getvalue())
        graph = model.graph
        # big float32 initializers are stored as float16 and cast back when loaded
        for init in list(graph.initializer):
            if init.data_type == onnx.TensorProto.FLOAT and np.prod(init.dims) >= 1024:
                half = numpy_helper.from_array(
                    numpy_helper.to_array(init).astype(np.float16), init.name + "_f16")
                graph.initializer.remove(init)
                graph.initializer.append(half)
                graph.node.insert(0, helper.make_node("Cast", [half.name], [init.name],
                                                      to=onnx.TensorProto.FLOAT))
        model.doc_string = doc
        onnx.checker.check_model(model)
        path = Path(path)
        path.write_bytes(model.SerializeToString())
        return path


def train_finetuned_layer(maps, age, female, rows=None, *, epochs=4, sigma=3.0, lr=3e-4,
                          batch_size=LAYER_BATCH_SIZE, random_state=0, n_threads=None, callback=None,
                          sample_weight=None):
    """Fine-tune SFace's embedding layer on ``maps[rows]``.

    Parameters
    ----------
    maps : ndarray of shape (n, 1024, 7, 7), float16 or float32
        Frozen ``conv_14_relu`` maps (:func:`frozen_maps`).
    age : ndarray of shape (n,)
    female : ndarray of shape (n,)
        1.0 for female, 0.0 for male; NaN where the gender is unknown (no gender loss).
    rows : index array or None
        Training rows (all by default).
    epochs, sigma, lr, batch_size : training settings
        ``sigma``: width in years of the Gaussian age label; the head outputs get
        10 x ``lr`` (AdamW, one-cycle schedule).
    random_state : int
    n_threads : int or None
        torch threads (None keeps torch's setting).
    callback : callable or None
        ``callback(epoch, layer)`` after each epoch, e.g. to print validation scores.
    sample_weight : ndarray of shape (n,) or None
        Weight of each map's loss (read at ``rows``): finite, >= 0, with a positive
        sum over ``rows``. A batch's age loss (KL to the Gaussian label plus 0.1 x the
        L1 error of the expected age) is the weighted sum over its rows divided by
        their weight sum, and its gender loss the same over its rows of known gender;
        a batch whose weights are all 0 changes nothing (the learning-rate schedule
        still advances). None, or all ones, trains exactly as without weights.

    Returns
    -------
    FineTunedLayer

    Raises
    ------
    ValueError
        Fewer ``rows`` than ``batch_size``, or an invalid ``sample_weight``.
    """
    torch = _torch()
    import torch.nn.functional as F

    if n_threads is not None:
        torch.set_num_threads(int(n_threads))
    age = np.asarray(age, dtype=np.float32)
    female = np.asarray(female, dtype=np.float32)
    rows = np.arange(len(maps)) if rows is None else np.asarray(rows)
    if len(rows) < batch_size:
        raise ValueError(f"{len(rows)} training faces: need at least batch_size={batch_size}")
    weight = _check_sample_weight(sample_weight, len(maps), rows)
    torch.manual_seed(random_state)
    rng = np.random.default_rng(random_state)
    from ..embedding import sface_weights

    module = _make_module(sface_weights())
    heads = [*module.age.parameters(), *module.female.parameters()]
    optimizer = torch.optim.AdamW([{"params": module.body.parameters(), "lr": lr},
                                   {"params": heads, "lr": 10 * lr}], weight_decay=1e-4)
    steps = epochs * (len(rows) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[lr, 10 * lr],
                                                   total_steps=steps, pct_start=0.1)
    ages = torch.arange(N_AGES, dtype=torch.float32)
    layer = FineTunedLayer(module)
    for epoch in range(epochs):
        module.train()
        order = rng.permutation(rows)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            batch = np.sort(order[start:start + batch_size])
            x = torch.from_numpy(np.asarray(maps[batch], dtype=np.float32))
            y = torch.from_numpy(age[batch])
            g = torch.from_numpy(female[batch])
            w = None if weight is None else torch.from_numpy(weight[batch])
            if w is not None and not w.sum() > 0:
                with warnings.catch_warnings():  # may come before the first optimizer step
                    warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step",
                                            UserWarning)
                    schedule.step()  # nothing to learn from this batch
                continue
            age_logits, female_logit = module(x)
            target = torch.exp(-0.5 * ((ages[None] - y[:, None]) / sigma) ** 2)
            target = target / target.sum(1, keepdim=True)
            log_p = age_logits.log_softmax(1)
            known = ~torch.isnan(g)
            if w is None:
                loss = (F.kl_div(log_p, target, reduction="batchmean")
                        + 0.1 * ((log_p.exp() * ages).sum(1) - y).abs().mean())
                if known.any():
                    loss = loss + F.binary_cross_entropy_with_logits(female_logit[known],
                                                                     g[known])
            else:
                per_row = (F.kl_div(log_p, target, reduction="none").sum(1)
                           + 0.1 * ((log_p.exp() * ages).sum(1) - y).abs())
                loss = (w * per_row).sum() / w.sum()
                if w[known].sum() > 0:
                    bce = F.binary_cross_entropy_with_logits(female_logit[known], g[known],
                                                             reduction="none")
                    loss = loss + (w[known] * bce).sum() / w[known].sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        module.eval()
        if callback is not None:
            callback(epoch, layer)
    return layer


def _check_sample_weight(sample_weight, n, rows):
    """``sample_weight`` as float32, or None when it is None or all ones (the unweighted loss)."""
    if sample_weight is None:
        return None
    weight = np.asarray(sample_weight, dtype=np.float64)
    if weight.shape != (n,):
        raise ValueError(f"sample_weight has shape {weight.shape}: need ({n},), one weight "
                         "per map")
    if not np.isfinite(weight).all():
        raise ValueError("sample_weight has non-finite values (NaN or inf)")
    if (weight < 0).any():
        raise ValueError("sample_weight has negative values")
    if not weight[rows].sum() > 0:
        raise ValueError("sample_weight sums to 0 over the training rows")
    if (weight[rows] == 1).all():
        return None
    return weight.astype(np.float32)
