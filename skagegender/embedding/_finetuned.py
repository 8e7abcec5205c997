"""SFace's embedding layer fine-tuned for age and gender, run on SFace's own maps.

SFace keeps where each activation sits on the face up to ``conv_14_relu``
(1024 x 7 x 7); only its embedding layer (batch norm, flatten, a 50,176 x 128
linear map) mixes positions. The network in
``skagegender/pretrained/sface_finetuned.onnx`` is that embedding layer with two
new outputs, probabilities of the ages 0..100 and P(female). It reads the
frozen ``conv_14_relu`` maps of the same SFace pass, so it adds one small matrix
product to it. How it was trained and measured: ``skagegender/pretrained/MODEL_CARD.md``.

Trained on research-only faces: non-commercial use, like the shipped model.
"""

from dataclasses import dataclass

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
