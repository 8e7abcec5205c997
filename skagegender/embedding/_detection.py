"""Face detection (YuNet) and 5-landmark alignment to the ArcFace template."""

from dataclasses import dataclass, field

import numpy as np

#: Side in pixels of an aligned face crop, the frame of :data:`ARCFACE_TEMPLATE`: the
#: networks read ``ALIGNED_SIZE`` x ``ALIGNED_SIZE`` crops.
ALIGNED_SIZE = 112
#: The 5-point ArcFace template for a 112 x 112 crop: image-left eye, image-right
#: eye, nose tip, image-left and image-right mouth corners.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


@dataclass
class Face:
    """One detected face.

    Attributes
    ----------
    box : ndarray of shape (4,)
        ``x1, y1, x2, y2`` in pixels of the input image.
    score : float
        Detection confidence in [0, 1].
    landmarks : ndarray of shape (5, 2)
        Eyes, nose tip and mouth corners (image-left first), in pixels.
    embedding : ndarray of shape (n_features,) or None
        The backbone's features for the aligned face, when computed.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    embedding: np.ndarray = field(default=None, repr=False)

    @property
    def size(self):
        """Geometric mean of the box's width and height, in pixels."""
        w = max(float(self.box[2] - self.box[0]), 0.0)
        h = max(float(self.box[3] - self.box[1]), 0.0)
        return float(np.sqrt(w * h))


def similarity_transform(src, dst):
    """Least-squares similarity transform (Umeyama) mapping ``src`` points onto ``dst``.

    Parameters
    ----------
    src, dst : ndarray of shape (n_points, 2)

    Returns
    -------
    matrix : ndarray of shape (2, 3)
        Affine matrix for :func:`cv2.warpAffine`.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rotation = u @ np.diag(d) @ vt
    var_src = (src_c**2).sum() / len(src)
    scale = (s * d).sum() / var_src if var_src > 0 else 1.0
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def align_face(image, landmarks, size=ALIGNED_SIZE):
    """Warp a face so that its 5 landmarks land on the ArcFace template.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3)
    landmarks : ndarray of shape (5, 2)
    size : int, default=112
        Side of the square crop; the template is scaled from 112.

    Returns
    -------
    crop : ndarray of shape (size, size, 3)
    """
    import cv2

    matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE * (size / ALIGNED_SIZE))
    return cv2.warpAffine(image, matrix, (size, size), borderValue=0.0)


def _nms(boxes, scores, iou_threshold):
    order = np.argsort(-scores, kind="stable")
    keep = []
    areas = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = (xx2 - xx1).clip(0) * (yy2 - yy1).clip(0)
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=int)


class YuNetDetector:
    """YuNet face detector run at (close to) native resolution.

    ``session`` is a session of the converted YuNet graph, onnxruntime's or
    OpenVINO's (:func:`skagegender.embedding._assets.make_session`).

    Images larger than ``max_side`` on their long side are downscaled for
    detection (boxes and landmarks are mapped back); smaller ones are only padded
    to a multiple of 32, never enlarged.
    """

    strides = (8, 16, 32)

    def __init__(self, session, *, score_threshold=0.6, nms_threshold=0.3, max_side=1024):
        self.session = session
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side
        self._outputs = [o.name for o in session.get_outputs()]

    def __call__(self, image, max_side=None):
        """Detect faces in an (H, W, 3) uint8 BGR image; return a list of :class:`Face`.

        ``max_side`` replaces the detector's own for this call (the same session
        runs both: a second detection at another scale needs no other detector).
        """
        import cv2

        height, width = image.shape[:2]
        max_side = self.max_side if max_side is None else max_side
        scale = min(1.0, max_side / max(height, width))
        if scale < 1.0:
            image = cv2.resize(
                image,
                (max(1, round(width * scale)), max(1, round(height * scale))),
                interpolation=cv2.INTER_AREA,
            )
        h, w = image.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        blob = np.zeros((1, 3, ph, pw), dtype=np.float32)
        blob[0, :, :h, :w] = image.transpose(2, 0, 1)
        out = dict(zip(self._outputs, self.session.run(self._outputs, {"input": blob})))
        boxes, scores, kps = [], [], []
        for s in self.strides:
            cols = pw // s
            score = np.sqrt(
                np.clip(out[f"cls_{s}"][0, :, 0], 0, 1) * np.clip(out[f"obj_{s}"][0, :, 0], 0, 1)
            )
            idx = np.nonzero(score >= self.score_threshold)[0]
            if not idx.size:
                continue
            row, col = (idx // cols).astype(np.float32), (idx % cols).astype(np.float32)
            b = out[f"bbox_{s}"][0, idx]
            cx, cy = (col + b[:, 0]) * s, (row + b[:, 1]) * s
            bw, bh = np.exp(b[:, 2]) * s, np.exp(b[:, 3]) * s
            boxes.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1))
            k = out[f"kps_{s}"][0, idx].reshape(-1, 5, 2)
            kps.append(np.stack([(k[..., 0] + col[:, None]) * s,
                                 (k[..., 1] + row[:, None]) * s], axis=-1))
            scores.append(score[idx])
        if not boxes:
            return []
        boxes, scores, kps = np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps)
        keep = _nms(boxes, scores, self.nms_threshold)
        boxes, scores, kps = boxes[keep] / scale, scores[keep], kps[keep] / scale
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        return [
            Face(box=boxes[i].astype(np.float32), score=float(scores[i]),
                 landmarks=kps[i].astype(np.float32))
            for i in range(len(scores))
        ]
