"""Frozen SFace maps of a dataset's faces, computed once and kept in a folder."""

import time
from pathlib import Path

import numpy as np

from ._finetune import MAP_LAYER, MAP_SHAPE


def aligned_chunk(items):
    """Aligned RGB crops of ``items`` (paths, or (path, seed) for degraded copies), found mask.

    An item whose degraded copy cannot be made (an unreadable file) is not found, as an
    image without a face is; the others are aligned as ``ArcFaceEmbedder().align`` does.
    """
    from ..embedding import ALIGNED_SIZE, ArcFaceEmbedder, ImageLoadError, load_image
    from ._augment import degrade_photo

    images, usable = [], []
    for index, item in enumerate(items):
        if isinstance(item, tuple):
            path, seed = item
            try:
                # load_image gives BGR; degrade it there, hand the embedder RGB
                image = np.ascontiguousarray(degrade_photo(load_image(path), int(seed))[..., ::-1])
            except ImageLoadError:
                continue
        else:
            image = str(item)
        images.append(image)
        usable.append(index)
    crops = np.zeros((len(items), ALIGNED_SIZE, ALIGNED_SIZE, 3), np.uint8)
    found = np.zeros(len(items), bool)
    if images:
        aligned = ArcFaceEmbedder().align(images)
        crops[usable], found[usable] = aligned.crops, aligned.found
    return crops, found


def _map_chunk(items):
    """Aligned crops of ``items`` (paths, or (path, seed) for degraded copies) -> maps."""
    from ..embedding import sface_maps

    crops, found = aligned_chunk(items)
    maps = np.zeros((len(items), *MAP_SHAPE), np.float16)
    if found.any():
        maps[found] = sface_maps(crops[found], layer=MAP_LAYER).astype(np.float16)
    return maps, found


def _item_key(item):
    """An item's cache key: its path (and seed) with the file's size and modification time.

    A file changed under the same name gets a new key, so its rows are computed again.
    """
    path, seed = item if isinstance(item, tuple) else (item, None)
    try:
        info = Path(path).stat()
        stamp = f"{info.st_size}:{info.st_mtime_ns}"
    except OSError:
        stamp = "missing"
    return f"{path}|{stamp}" if seed is None else f"{path}|{stamp}|seed={int(seed)}"


def cached_rows(name, items, folder, compute, *, row_shape, dtype, n_jobs=1, chunk=64,
                verbose=True, what="rows"):
    """One array row per item, computed by ``compute`` in chunks, kept in ``folder``.

    ``folder/{name}.npy`` holds the rows and ``folder/{name}_index.npz`` the items'
    keys (path, file size and modification time, seed) and a found mask. A later call
    whose items have the same keys reads them back (never unpickling; damaged, foreign
    or stale files are computed again). Both files are written atomically.

    Parameters
    ----------
    name : str
        Cache file stem.
    items : list
        Image paths, or ``(path, seed)`` pairs for degraded copies.
    folder : str or path
    compute : callable
        ``compute(items_chunk) -> (rows, found)``, rows of shape ``(len(chunk), *row_shape)``.
    row_shape : tuple of int
    dtype : numpy dtype
    n_jobs : int, default=1
        Worker processes.
    chunk : int, default=64
        Items per task.
    verbose : bool, default=True
    what : str, default="rows"
        Named in the progress line.

    Returns
    -------
    rows : ndarray of shape (n, *row_shape)
        Zeros where no face was found.
    found : ndarray of shape (n,), bool
    """
    from joblib import Parallel, delayed

    from .._utils import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows_file, index_file = folder / f"{name}.npy", folder / f"{name}_index.npz"
    keys = [_item_key(item) for item in items]
    shape = (len(keys), *row_shape)
    if rows_file.is_file() and index_file.is_file():
        try:
            with np.load(index_file, allow_pickle=False) as index:
                same = index["keys"].tolist() == keys
                found = index["found"].astype(bool)
            if same:
                rows = np.load(rows_file, allow_pickle=False, mmap_mode="r")
                if rows.shape == shape and rows.dtype == dtype and len(found) == len(keys):
                    return np.array(rows), found
        except (OSError, ValueError, KeyError, EOFError):
            pass  # damaged or foreign files: computed again below
    start = time.perf_counter()
    parts = Parallel(n_jobs=n_jobs)(delayed(compute)(items[i:i + chunk])
                                    for i in range(0, len(items), chunk))
    rows = (np.concatenate([p[0] for p in parts]).astype(dtype, copy=False) if parts
            else np.zeros(shape, dtype))
    found = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, bool)
    atomic_write(rows_file, lambda f: np.save(f, rows))
    atomic_write(index_file, lambda f: np.savez(f, keys=np.array(keys, dtype=str), found=found))
    if verbose:
        print(f"{name}: {what} of {int(found.sum())} faces in {len(items)} images, "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    return rows, found


def frozen_maps(name, items, folder, *, n_jobs=1, chunk=64, verbose=True):
    """SFace ``conv_14_relu`` maps of each item's face, cached in ``folder``.

    Each image's face is chosen and aligned as ``ArcFaceEmbedder()`` does
    (:meth:`~skagegender.embedding.ArcFaceEmbedder.align`), then run through SFace up
    to ``conv_14_relu`` (:func:`~skagegender.embedding.sface_maps`). The maps are kept
    by :func:`cached_rows` as ``folder/{name}_maps.npy`` (float16, 100 KB per face);
    a later call with the same items, unchanged on disk, reads them back.

    Parameters
    ----------
    name : str
        Cache file stem.
    items : list
        Image paths, or ``(path, seed)`` pairs for degraded copies
        (:func:`degrade_photo` with that seed).
    folder : str or path
    n_jobs : int, default=1
        Worker processes.
    chunk : int, default=64
        Images per task.

    Returns
    -------
    maps : ndarray of shape (n, 1024, 7, 7), float16
        Zeros where no face was found.
    found : ndarray of shape (n,), bool
    """
    return cached_rows(f"{name}_maps", items, folder, _map_chunk, row_shape=MAP_SHAPE,
                       dtype=np.float16, n_jobs=n_jobs, chunk=chunk, verbose=verbose,
                       what="maps")
