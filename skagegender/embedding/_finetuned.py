"""SFace's embedding layer fine-tuned for age and gender, run on SFace's own maps.

SFace keeps where each activation sits on the face up to ``conv_14_relu``
(1024 x 7 x 7); only its embedding layer (batch norm, flatten, a 50,176 x 128
linear map) mixes positions. The network in
``skagegender/pretrained/sface_finetuned.onnx`` is that embedding layer with two
new outputs, probabilities of the ages 0..100 and P(female). It reads the
frozen ``conv_14_relu`` maps of the same SFace pass, so it adds one small matrix
product to it. How it was trained and measured: ``skagegender/pretrained/MODEL_CARD.md``.

A layer trained on other faces (``skagegender.training.train_finetuned_layer``)
is handed to the embedder as :class:`FineTunedWeights`: its checked numbers
only, run in a graph this module builds (:meth:`FineTunedWeights.onnx_model`).

Trained on research-only faces: non-commercial use, like the shipped model.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from ._assets import PackagedModel


@dataclass(frozen=True)
class FineTunedNet:
    """A network run on an SFace activation: its file, input and the features it gives.

    ``parts`` names the consecutive column blocks of its output, as
    ``(block name, width)`` pairs (see :func:`~skagegender.embedding.feature_blocks`).
    """

    name: str
    asset: PackagedModel
    input_layer: str
    feature_names: tuple
    parts: tuple = ()

    @property
    def dim(self):
        return len(self.feature_names)


SFACE_FINETUNED = FineTunedNet(
    name="sface_finetuned",
    asset=PackagedModel(
        package="skagegender",
        relpath="pretrained/sface_finetuned.onnx",
        sha256="61bc57254d90409f76f72610a3108bd7b2638ca0617dc2a42deb3d495c85ab89",
        licence="trained on UTKFace: non-commercial research use",
    ),
    input_layer="conv_14_relu",
    feature_names=tuple(f"sface_finetuned_age_p{k}" for k in range(101))
    + ("sface_finetuned_female",),
    parts=(("sface_finetuned_age", 101), ("sface_finetuned_female", 1)),
)
#: Fine-tuned networks by the name ``ArcFaceEmbedder(layers=...)`` accepts.
FINETUNED_NETS = {net.name: net for net in (SFACE_FINETUNED,)}
#: Ages of the 101 age probabilities of :data:`SFACE_FINETUNED`.
FINETUNED_AGE_CLASSES = np.arange(101, dtype=np.float64)


#: The arrays of a :class:`FineTunedWeights`, by key: (shape, dtype).
FINETUNED_WEIGHT_ARRAYS = {
    "hidden_weight": ((50176, 128), np.dtype("<f2")),
    "hidden_bias": ((128,), np.dtype("<f4")),
    "prelu_slope": ((128,), np.dtype("<f4")),
    "output_weight": ((128, 102), np.dtype("<f4")),
    "output_bias": ((102,), np.dtype("<f4")),
}
#: Shape of one face's input maps (SFace's ``conv_14_relu``).
_MAPS_SHAPE = (1024, 7, 7)
_N_AGES = 101


class FineTunedWeights:
    """The numbers of a fine-tuned SFace layer, checked: all a model file may carry of it.

    The layer maps one face's ``conv_14_relu`` maps ``m`` (1024 x 7 x 7) to 102
    outputs::

        hidden = prelu(flatten(m) @ hidden_weight + hidden_bias, prelu_slope)
        logits = hidden @ output_weight + output_bias
        probs  = [softmax(logits[:101]), sigmoid(logits[101])]

    the 101 age probabilities (ages 0..100) and P(female), as the shipped layer
    gives them. Both batch norms of the trained layer are folded into
    ``hidden_weight`` and ``hidden_bias``
    (:meth:`skagegender.training.FineTunedLayer.weights` makes them).
    :class:`ArcFaceEmbedder` ``(finetuned_weights=...)`` runs them in a graph built
    by skagegender (:meth:`onnx_model`); only these numbers come from outside.

    The object is immutable: its arrays are read-only, and copies of it are itself.

    Parameters
    ----------
    arrays : mapping of str -> ndarray
        Exactly the keys of :data:`FINETUNED_WEIGHT_ARRAYS`, each an ndarray of
        that shape and dtype (``hidden_weight``: (50176, 128) float16;
        ``hidden_bias``, ``prelu_slope``: (128,) float32; ``output_weight``:
        (128, 102) float32; ``output_bias``: (102,) float32), all finite.

    Attributes
    ----------
    sha256 : str
        Hex sha256 of the arrays' canonical bytes (names, dtypes, shapes and
        little-endian data in key order): the layer's identity in backbone specs,
        caches and model files.

    Raises
    ------
    ValueError
        For a missing or extra key, an array of another type, shape or dtype, or
        one holding NaN or infinity.
    """

    def __init__(self, arrays):
        import hashlib

        if not isinstance(arrays, Mapping):
            raise ValueError(  # noqa: TRY004 - a bad value, reported like the others
                f"fine-tuned weights must be a mapping of arrays, got {type(arrays).__name__}")
        keys = set(arrays)
        expected = set(FINETUNED_WEIGHT_ARRAYS)
        if keys != expected:
            missing = sorted(map(str, expected - keys))
            extra = sorted(map(str, keys - expected))
            raise ValueError(f"fine-tuned weights must have exactly the arrays "
                             f"{sorted(expected)}; missing {missing}, extra {extra}")
        digest = hashlib.sha256()
        checked = {}
        for key, (shape, dtype) in FINETUNED_WEIGHT_ARRAYS.items():
            value = arrays[key]
            if type(value) is not np.ndarray:
                raise ValueError(f"fine-tuned weight {key!r} must be a numpy array, got "
                                 f"{type(value).__name__}")
            if value.shape != shape or value.dtype != dtype:
                raise ValueError(f"fine-tuned weight {key!r} must be {dtype.name} of shape "
                                 f"{shape}, got {value.dtype.name} of shape {value.shape}")
            if not np.isfinite(value).all():
                raise ValueError(f"fine-tuned weight {key!r} holds NaN or infinite values")
            array = np.array(value, dtype=dtype, order="C", copy=True)
            array.flags.writeable = False
            checked[key] = array
            digest.update(f"{key}:{dtype.str}:{shape}\n".encode())
            digest.update(array.tobytes())
        self._arrays = checked
        self.sha256 = digest.hexdigest()

    @property
    def arrays(self):
        """The arrays by key (read-only): what a model file stores."""
        return MappingProxyType(self._arrays)

    def __eq__(self, other):
        if not isinstance(other, FineTunedWeights):
            return NotImplemented
        return self.sha256 == other.sha256

    def __hash__(self):
        return hash(self.sha256)

    def __repr__(self):
        return f"FineTunedWeights(sha256={self.sha256[:12]}...)"

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        # a pickle is trusted code anyway (model files never hold one): rebuilt without
        # hashing 12 MB again, e.g. in every joblib task of ArcFaceEmbedder(n_jobs=...)
        return _restore_weights, (dict(self._arrays), self.sha256)

    def onnx_model(self):
        """The layer as an ONNX model built here, from a fixed template and these numbers.

        Input ``maps`` (n, 1024, 7, 7) float32, output ``probs`` (n, 102) float32:
        the interface of the packaged ``sface_finetuned.onnx``. ``hidden_weight``
        is stored as float16 and cast to float32 once, when a session is made.

        Returns
        -------
        model : onnx.ModelProto
        """
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        initializers = [numpy_helper.from_array(np.asarray(array), key)
                        for key, array in self._arrays.items()]
        initializers += [numpy_helper.from_array(np.array(value, np.int64), name)
                         for name, value in (("zero", [0]), ("n_ages", [_N_AGES]),
                                             ("n_outputs", [_N_AGES + 1]), ("axis", [1]))]
        node = helper.make_node
        nodes = [
            node("Cast", ["hidden_weight"], ["hidden_weight_f32"], to=TensorProto.FLOAT),
            node("Flatten", ["maps"], ["flat"], axis=1),
            node("MatMul", ["flat", "hidden_weight_f32"], ["hidden_product"]),
            node("Add", ["hidden_product", "hidden_bias"], ["hidden_linear"]),
            node("PRelu", ["hidden_linear", "prelu_slope"], ["hidden"]),
            node("MatMul", ["hidden", "output_weight"], ["output_product"]),
            node("Add", ["output_product", "output_bias"], ["logits"]),
            node("Slice", ["logits", "zero", "n_ages", "axis"], ["age_logits"]),
            node("Slice", ["logits", "n_ages", "n_outputs", "axis"], ["female_logit"]),
            node("Softmax", ["age_logits"], ["age_probs"], axis=1),
            node("Sigmoid", ["female_logit"], ["female_prob"]),
            node("Concat", ["age_probs", "female_prob"], ["probs"], axis=1),
        ]
        graph = helper.make_graph(
            nodes, "sface_finetuned",
            [helper.make_tensor_value_info("maps", TensorProto.FLOAT, ["batch", *_MAPS_SHAPE])],
            [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", _N_AGES + 1])],
            initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                  producer_name="skagegender", ir_version=8,
                                  doc_string=f"fine-tuned SFace layer, weights {self.sha256}")
        onnx.checker.check_model(model)
        return model

    def session(self, *, providers=None, n_threads=1):
        """A session of :meth:`onnx_model` (input ``maps``, output ``probs``).

        Run by the process's engine, OpenVINO or onnxruntime
        (:func:`skagegender.embedding._assets.make_session`).
        """
        from ._assets import make_session

        return make_session(self.onnx_model().SerializeToString(), providers=providers,
                            n_threads=n_threads)

    def outputs(self, maps, rows=None, *, batch_size=256, session=None):
        """(n, 102) float32: the layer's age probabilities and P(female) on maps.

        What :class:`ArcFaceEmbedder` puts in its ``sface_finetuned`` block for
        faces with these maps.

        Parameters
        ----------
        maps : ndarray of shape (n_maps, 1024, 7, 7), float16 or float32
            SFace ``conv_14_relu`` maps (``skagegender.training.frozen_maps``).
        rows : index array or None, default=None
            Which maps (all by default); read ``batch_size`` at a time, so a
            memory-mapped array is never loaded whole.
        batch_size : int, default=256
        session : session or None
            From :meth:`session` (made here when None).

        Returns
        -------
        probs : ndarray of shape (n_rows, 102), float32
        """
        rows = np.arange(len(maps)) if rows is None else np.asarray(rows)
        if tuple(np.shape(maps)[1:]) != _MAPS_SHAPE:
            raise ValueError(f"maps must have shape (n, 1024, 7, 7), got {np.shape(maps)}")
        session = self.session() if session is None else session
        parts = [session.run(["probs"], {"maps": np.asarray(
                     maps[rows[start:start + batch_size]], dtype=np.float32)})[0]
                 for start in range(0, len(rows), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, _N_AGES + 1), np.float32)


def _restore_weights(arrays, sha256):
    """A :class:`FineTunedWeights` from its pickle (arrays of a checked instance)."""
    weights = FineTunedWeights.__new__(FineTunedWeights)
    weights._arrays = {}
    for key, value in arrays.items():
        array = np.asarray(value)
        array.flags.writeable = False
        weights._arrays[key] = array
    weights.sha256 = sha256
    return weights
