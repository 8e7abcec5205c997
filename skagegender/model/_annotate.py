"""Annotated copies of photos: every face's numbered box and label drawn on the image."""

import os
from pathlib import Path


def annotation_targets(items, folder):
    """One output file per readable input in ``folder``: the input's name, made unique.

    Same-named inputs from different folders get ``-2``, ``-3`` ... before the
    suffix; no target is ever one of the inputs. Formats keep the input's suffix,
    except PGM/PBM (written as colour .ppm) and unknown suffixes (.png added).

    Parameters
    ----------
    items : list of (str, str or None)
        ``(path, error)`` per input; inputs with an error get no target.
    folder : str or path-like or None
        The output folder; None gives no targets.

    Returns
    -------
    targets : list of str or None
        One per item.
    """
    if folder is None:
        return [None] * len(items)
    from ..embedding import IMAGE_SUFFIXES

    folder = Path(folder)
    inputs = {os.path.normcase(os.path.abspath(path)) for path, _ in items}
    used, targets = set(), []
    for path, error in items:
        if error is not None:
            targets.append(None)
            continue
        name = Path(path).name
        stem, suffix = os.path.splitext(name)
        if suffix.lower() in (".pgm", ".pbm"):
            suffix = ".ppm"
        elif suffix.lower() not in IMAGE_SUFFIXES:
            stem, suffix = name, ".png"
        n, target = 1, folder / f"{stem}{suffix}"
        while (os.path.normcase(str(target)).casefold() in used
               or os.path.normcase(os.path.abspath(target)) in inputs):
            n += 1
            target = folder / f"{stem}-{n}{suffix}"
        used.add(os.path.normcase(str(target)).casefold())
        targets.append(str(target))
    return targets


def annotate_image(model, path, records, target, *, overwrite=False):
    """Draw every face's box and label on a copy of ``path`` written to ``target``.

    The copy has the photo's size and the format of ``target``'s suffix (PNG when
    unknown). It is written with :func:`skagegender._utils.atomic_write`: under an
    unpredictable temporary name created exclusively, then linked to ``target``
    only if nothing has that name (with ``overwrite``: renamed over an existing
    regular file), so a planted link is never written through and an existing file
    is not replaced unasked.

    Parameters
    ----------
    model : AgeGenderModel
        The fitted model that found the faces (its embedder reads the photo).
    path : str
        The photo.
    records : list of dict
        The faces, as :meth:`AgeGenderModel.predict_faces` returns them.
    target : str
        The file to write.
    overwrite : bool, default=False
        Replace an existing regular file ``target``.

    Returns
    -------
    error : str or None
        None, or the reason the copy could not be written.
    """
    import cv2
    from PIL import Image

    from .._utils import atomic_write
    from ..embedding import IMAGE_FORMATS, ImageLoadError, load_image

    embedder = model.embedder_
    try:
        bgr = load_image(path, color=embedder.color, max_pixels=embedder.max_pixels)
    except ImageLoadError as exc:
        return f"cannot annotate: {exc.reason}"
    try:
        _draw(bgr, records)
    except (cv2.error, OverflowError, ValueError):
        return "cannot annotate: a face box lies outside the image"
    suffix = os.path.splitext(target)[1].lower()
    fmt = next((name for name, suffixes in IMAGE_FORMATS.items() if suffix in suffixes), "PNG")
    options = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}.get(fmt, {})
    if overwrite and os.path.lexists(target) and (os.path.islink(target)
                                                  or not os.path.isfile(target)):
        return (f"cannot write the annotated copy {target}: it is a link or special file, "
                "not replaced")
    try:
        atomic_write(target, lambda file: Image.fromarray(bgr[:, :, ::-1]).save(
            file, format=fmt, **options), overwrite=overwrite)
    except FileExistsError:
        return (f"cannot write the annotated copy {target}: it exists (pass --overwrite "
                "to replace it)")
    except OSError as exc:
        return f"cannot write the annotated copy {target}: {exc.strerror or exc}"
    return None


def _draw(bgr, records):
    """Draw each face's numbered box and label on ``bgr`` in place."""
    import cv2

    height, width = bgr.shape[:2]
    thick = max(1, round(min(height, width) / 300))
    scale = max(0.4, min(height, width) / 900)
    for number, face in enumerate(records, start=1):
        x1, y1, x2, y2 = (round(v) for v in face["box"])
        colour = {"female": (60, 60, 230), "male": (230, 120, 30)}.get(face["gender"], (0, 200, 0))
        cv2.rectangle(bgr, (x1, y1), (x2, y2), colour, thick, cv2.LINE_AA)
        label = f"{number}: {face['age']:.0f}" + (f" {face['gender']}" if face["gender"] else "")
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        top = y1 - th - base - 2 * thick if y1 - th - base - 2 * thick >= 0 else y1
        left = min(max(x1, 0), max(width - tw - 2 * thick, 0))
        cv2.rectangle(bgr, (left, top), (left + tw + 2 * thick, top + th + base + 2 * thick),
                      colour, -1)
        cv2.putText(bgr, label, (left + thick, top + th + thick), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (255, 255, 255), thick, cv2.LINE_AA)
