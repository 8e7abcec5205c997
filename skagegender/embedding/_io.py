"""Image loading shared by every part of skagegender.

One function, :func:`load_image`, turns any supported image source into an
``(H, W, 3)`` uint8 **BGR** array (OpenCV's channel order, which the detectors
use). Every failure raises :class:`ImageLoadError`, which names the source.

Files are hostile until checked: only regular files are opened (a FIFO, a device
such as ``/dev/zero`` or a socket is refused before it is opened, symlinks
followed), a file over ``max_bytes`` is refused before it is read, and only the
formats of :data:`IMAGE_FORMATS` are decoded.

Of an animated GIF, WebP or PNG and of a multi-page TIFF only the first frame is
read; :func:`peek_image` counts the frames, and ``skagegender predict`` and
``embed`` say "first frame of N read" for such an input.
"""

import io
import os
import stat
import struct
from typing import NamedTuple

import numpy as np

from .._utils import NotRegularFileError, open_regular_file

DEFAULT_MAX_PIXELS = 40_000_000
#: Files larger than this many bytes are refused before they are read. 100 MB holds
#: any compressed photo (a 100-megapixel camera JPEG is 20-50 MB); uncompressed BMP,
#: PPM or TIFF files over about 33 megapixels need a larger ``max_bytes``.
DEFAULT_MAX_BYTES = 100_000_000

#: The image formats skagegender reads (Pillow format name -> file suffixes). Files
#: and folders are filtered by these suffixes, and decoding is restricted to
#: these formats, so no other decoder (Ghostscript for EPS, ...) ever runs.
IMAGE_FORMATS = {
    "JPEG": (".jpg", ".jpeg", ".jfif"),
    "PNG": (".png",),
    "BMP": (".bmp",),
    "WEBP": (".webp",),
    "TIFF": (".tif", ".tiff"),
    "GIF": (".gif",),
    "PPM": (".pbm", ".pgm", ".ppm"),
}

#: Lower-case file suffixes of :data:`IMAGE_FORMATS`.
IMAGE_SUFFIXES = frozenset(s for suffixes in IMAGE_FORMATS.values() for s in suffixes)


class ImageLoadError(ValueError):
    """An image could not be read: missing, corrupt, truncated, empty, not an image,
    an unsupported array, or larger than the pixel limit.

    Attributes
    ----------
    source : str
        A short description of the offending item (its path, or its type and shape).
    reason : str
        Why it could not be read.
    transient : bool
        True when the failure is about access to the file (permission denied, an I/O
        error) rather than its content, so that trying again later may succeed:
        such outcomes must not be cached.
    """

    def __init__(self, source, reason, *, transient=False):
        self.source = source
        self.reason = reason
        self.transient = transient
        super().__init__(f"{source}: {reason}")


def describe_source(image):
    """A short, printable name for an image source, for messages."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return f"<{len(image)} encoded bytes>"
    if isinstance(image, np.ndarray):
        return f"<array {image.shape} {image.dtype}>"
    return f"<{type(image).__name__}>"


_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(mode, source):
    """The ImageLoadError for a path that is not a regular file."""
    if stat.S_ISDIR(mode):
        return ImageLoadError(source, "is a directory, not an image file")
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "a special file")
    return ImageLoadError(source, f"is {kind}, not a regular file; only regular files are read")


def _access_error(exc, source):
    """The ImageLoadError for an OSError: only a missing file is not transient."""
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return ImageLoadError(source, "no such file")
    return ImageLoadError(source, f"cannot read the file ({exc.strerror or exc})",
                          transient=True)


def _read_file(path, source, max_bytes):
    """The bytes of a regular file of at most ``max_bytes`` bytes, else ImageLoadError.

    The file's kind and size are checked with ``os.stat`` (following symlinks)
    before it is opened, since opening a FIFO blocks and reading a device never
    ends. It is then opened without blocking, checked again on the open
    descriptor (the path may have been replaced in between), and read up to
    ``max_bytes + 1`` bytes (it may have grown in between).
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        raise _access_error(exc, source) from exc
    except ValueError as exc:  # a NUL character in the path
        raise ImageLoadError(source, f"invalid path ({exc})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise _not_regular(info.st_mode, source)
    if info.st_size > max_bytes:
        raise ImageLoadError(source, f"the file has {info.st_size:,} bytes, over the limit "
                                     f"of {max_bytes:,} (max_bytes)")
    try:
        file, _ = open_regular_file(path)
    except NotRegularFileError as exc:
        raise _not_regular(exc.mode, source) from None
    except OSError as exc:
        raise _access_error(exc, source) from exc
    with file:
        try:
            data = file.read(max_bytes + 1)
        except OSError as exc:
            raise _access_error(exc, source) from exc
    if len(data) > max_bytes:
        raise ImageLoadError(
            source, f"the file grew past the limit of {max_bytes:,} bytes (max_bytes) "
            "while it was being read"
        )
    return data


def _unsupported_format(prefix):
    """The name of a format Pillow knows but skagegender does not read, from a file's
    first bytes (signature checks only, nothing is parsed); None if none matches."""
    from PIL import Image

    Image.init()
    for name, (_, accept) in Image.OPEN.items():
        if name in IMAGE_FORMATS or accept is None:
            continue
        try:
            match = accept(prefix)
        except (struct.error, IndexError, ValueError):  # a check that wants a longer prefix
            continue
        if match and not isinstance(match, str):
            return name
    return None


def _pil_to_bgr(img, source, max_pixels):
    from PIL import Image, ImageOps

    width, height = img.size
    if width * height > max_pixels:
        raise ImageLoadError(
            source,
            f"{width}x{height} = {width * height:,} pixels exceeds the limit of "
            f"{max_pixels:,} (max_pixels); refusing a possible decompression bomb",
        )
    if width == 0 or height == 0:
        raise ImageLoadError(source, "the image is empty (0 pixels)")
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
    except Exception as exc:  # truncated data, broken EXIF, decoder errors
        raise ImageLoadError(source, f"cannot decode the image ({exc})") from exc
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(img)
        return _array_to_bgr(array, source, rgb=True)
    if mode != "RGB":
        if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
            # Composite transparent pixels on white, as a viewer would show them.
            img = img.convert("RGBA")
            background = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, img)
        img = img.convert("RGB")
    rgb = np.asarray(img, dtype=np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _array_to_bgr(array, source, *, rgb):
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageLoadError(
            source, "an image array must be H x W (gray) or H x W x 1, 3 or 4 (color)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageLoadError(source, "the image is empty (0 pixels)")
    if array.dtype == np.uint8:
        pass
    elif array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        array = np.clip(array, 0, 255).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ImageLoadError(source, "the image array contains NaN or infinity")
        scale = 255.0 if array.max(initial=0.0) <= 1.0 else 1.0
        array = np.clip(np.rint(array * scale), 0, 255).astype(np.uint8)
    elif array.dtype == bool:
        array = array.astype(np.uint8) * 255
    else:
        raise ImageLoadError(source, f"unsupported array dtype {array.dtype}")
    if array.ndim == 2 or array.shape[2] == 1:
        gray = array.reshape(array.shape[:2])
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if array.shape[2] == 4:
        alpha = array[:, :, 3:4].astype(np.float32) / 255.0
        array = np.rint(array[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    if rgb:
        array = array[:, :, ::-1]
    return np.ascontiguousarray(array)


def load_image(image, *, color="rgb", max_pixels=DEFAULT_MAX_PIXELS,
               max_bytes=DEFAULT_MAX_BYTES):
    """Read one image into an ``(H, W, 3)`` uint8 BGR array.

    Parameters
    ----------
    image : str, os.PathLike, bytes, numpy.ndarray or PIL.Image.Image
        A file path (a regular file; symlinks are followed); the encoded bytes of a
        file in one of the formats of :data:`IMAGE_FORMATS` (JPEG, PNG, BMP, WebP,
        TIFF, GIF, PPM; other formats such as EPS or ICO are refused without being
        decoded); an array of shape
        (H, W) gray, (H, W, 3) or (H, W, 4) with channels ordered as ``color`` says
        (uint8, uint16, other integers clipped to 0..255, or floats in 0..1 or
        0..255); or a PIL image. EXIF orientation is applied; grayscale, palette,
        RGBA (composited on white), CMYK and 16-bit images are converted.
    color : {"rgb", "bgr"}, default="rgb"
        Channel order of **array** inputs (files, bytes and PIL images carry their own).
    max_pixels : int, default=40_000_000
        Larger images are refused before they are decoded (decompression bombs).
    max_bytes : int, default=100_000_000
        Files larger than this are refused before they are read, and at most
        ``max_bytes + 1`` bytes are ever read from one file.

    Returns
    -------
    bgr : ndarray of shape (H, W, 3), dtype uint8

    Raises
    ------
    ImageLoadError
        For a missing, empty, corrupt, truncated or non-image file, a path that is
        not a regular file (directory, FIFO, device, socket), a file over
        ``max_bytes``, an unsupported format or array, or an image over
        ``max_pixels``. The message names the source. ``transient`` is True for
        access failures (permission denied, I/O errors) only.

    Examples
    --------
    >>> import numpy as np
    >>> from skagegender.embedding import load_image
    >>> load_image(np.zeros((4, 5), dtype=np.uint8)).shape
    (4, 5, 3)
    """
    source = describe_source(image)
    if color not in ("rgb", "bgr"):
        raise ValueError(f"color must be 'rgb' or 'bgr', got {color!r}")
    if isinstance(image, np.ndarray):
        return _array_to_bgr(image, source, rgb=color == "rgb")

    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return _pil_to_bgr(image, source, max_pixels)
    if isinstance(image, (str, os.PathLike)):
        data = _read_file(image, source, max_bytes)
    elif isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
    else:
        raise ImageLoadError(
            source, "expected a path, encoded bytes, a numpy array or a PIL image"
        )
    if not data:
        raise ImageLoadError(source, "the file is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data), formats=tuple(IMAGE_FORMATS)) as img:
            return _pil_to_bgr(img, source, max_pixels)
    except UnidentifiedImageError as exc:
        other = _unsupported_format(data[:16])
        if other is not None:
            raise ImageLoadError(
                source, f"unsupported format {other}; skagegender reads "
                f"{', '.join(IMAGE_FORMATS)}"
            ) from exc
        raise ImageLoadError(source, "not a recognised image format") from exc
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(source, f"refused as a decompression bomb ({exc})") from exc
    except ImageLoadError:
        raise
    except Exception as exc:
        raise ImageLoadError(source, f"cannot decode the image ({exc})") from exc


class ImageHeader(NamedTuple):
    """What an image file's header says: its size as loaded and its number of frames."""

    width: int
    height: int
    frames: int


def peek_image(path, *, max_bytes=DEFAULT_MAX_BYTES):
    """Size and frame count of an image file, without decoding its pixels.

    The file is checked and read as :func:`load_image` does. The size is the one
    :func:`load_image` returns (EXIF orientation applied); ``frames`` is above 1
    for an animated GIF, WebP or PNG and a multi-page TIFF, of which only the
    first frame is read.

    Parameters
    ----------
    path : str or os.PathLike
    max_bytes : int, default=100_000_000

    Returns
    -------
    header : ImageHeader
        ``(width, height, frames)``.

    Raises
    ------
    ImageLoadError
        When :func:`load_image` would refuse the file before decoding it.
    """
    from PIL import Image

    source = describe_source(path)
    data = _read_file(path, source, max_bytes)
    try:
        with Image.open(io.BytesIO(data), formats=tuple(IMAGE_FORMATS)) as img:
            width, height = img.size
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # turned by a quarter
                width, height = height, width
            frames = int(getattr(img, "n_frames", 1))
    except Exception as exc:  # any decoder complaint: the loader says why
        raise ImageLoadError(source, f"cannot read the image header ({exc})") from exc
    return ImageHeader(width, height, frames)


def frames_note(path, *, max_bytes=DEFAULT_MAX_BYTES):
    """"first frame of N read" for a multi-frame image file, else None.

    Parameters
    ----------
    path : str or os.PathLike
    max_bytes : int, default=100_000_000

    Returns
    -------
    note : str or None
        None also when the file cannot be read (the loader reports that).
    """
    try:
        frames = peek_image(path, max_bytes=max_bytes).frames
    except ImageLoadError:
        return None
    return f"first frame of {frames} read" if frames > 1 else None
