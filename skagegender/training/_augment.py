"""Photo-quality augmentation for training: the same face, as a worse photo."""

import numpy as np


def degrade_photo(image, random_state=None):
    """A copy of a BGR image as an old, small, blurred, recompressed photo might show it.

    Randomly (each step with its own probability): downscale to 25-100 % and back,
    Gaussian blur (sigma 0.3-1.8), contrast / brightness jitter and a colour cast,
    grayscale (30 %), sensor noise, JPEG re-encoding at quality 20-80. Training heads
    on such copies as well as on the originals teaches them age, not photo quality.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8, BGR
    random_state : int, numpy Generator or None

    Returns
    -------
    degraded : ndarray of shape (H, W, 3), uint8

    Examples
    --------
    >>> import numpy as np
    >>> from skagegender.training import degrade_photo
    >>> degrade_photo(np.zeros((64, 48, 3), np.uint8), random_state=0).shape
    (64, 48, 3)
    """
    import cv2

    rng = np.random.default_rng(random_state)
    height, width = image.shape[:2]
    img = image.astype(np.float32)
    if rng.random() < 0.7:
        factor = rng.uniform(0.25, 1.0)
        small = (max(8, round(width * factor)), max(8, round(height * factor)))
        img = cv2.resize(cv2.resize(img, small, interpolation=cv2.INTER_AREA), (width, height),
                         interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.8) * max(height, width) / 112)
    if rng.random() < 0.8:
        img = (img - 128) * rng.uniform(0.6, 1.3) + 128 + rng.uniform(-30, 30)
        img = img * rng.uniform(0.85, 1.15, size=3)[None, None]
    if rng.random() < 0.3:
        img = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
    if rng.random() < 0.4:
        img = img + rng.normal(0, rng.uniform(2, 10), img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.7:
        quality = int(rng.integers(20, 81))
        _, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return img
