"""Frozen SFace maps of a dataset's faces, computed once and kept in a folder."""

import time
from pathlib import Path

import numpy as np

from ._finetune import MAP_LAYER, MAP_SHAPE


def aligned_chunk(items):
    """Aligned RGB crops of ``items`` (paths, or (path, seed) for degraded copies), found mask."""
    from ..embedding import ArcFaceEmbedder, load_image
    from ._augment import degrade_photo

    images = []
    for item in items:
        if isinstance(item, tuple):
            path, seed = item
            try:
                # load_image gives BGR; degrade it there, hand the embedder RGB
                images.append(np.ascontiguousarray(
                    degrade_photo(load_image(path), int(seed))[..., ::-1]))
            except Exception as exc:  # noqa: BLE001 - the embedder reports it per item
                images.append(b"unreadable: " + str(exc).encode())
        else:
            images.append(str(item))
    aligned = ArcFaceEmbedder().align(images)
    return aligned.crops, aligned.found


def _map_chunk(items):
    """Aligned crops of ``items`` (paths, or (path, seed) for degraded copies) -> maps."""
    from ..embedding import sface_maps

    crops, found = aligned_chunk(items)
    maps = np.zeros((len(items), *MAP_SHAPE), np.float16)
    if found.any():
        maps[found] = sface_maps(crops[found], layer=MAP_LAYER).astype(np.float16)
    return maps, found


def frozen_maps(name, items, folder, *, n_jobs=1, chunk=64, verbose=True):
    """SFace ``conv_14_relu`` maps of each item's face, cached in ``folder``.

    Each image's face is chosen and aligned as ``ArcFaceEmbedder()`` does
    (:meth:`~skagegender.embedding.ArcFaceEmbedder.align`), then run through SFace up
    to ``conv_14_relu`` (:func:`~skagegender.embedding.sface_maps`). The maps are
    written to ``folder/{name}_maps.npy`` (float16, 100 KB per face) with an index of
    the items; a later call with the same items reads them back (never unpickling;
    damaged files are computed again).

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
    from joblib import Parallel, delayed

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    maps_file, index_file = folder / f"{name}_maps.npy", folder / f"{name}_index.npz"
    keys = [str(item) for item in items]
    if maps_file.is_file() and index_file.is_file():
        try:
            with np.load(index_file, allow_pickle=False) as index:
                same = index["keys"].tolist() == keys
                found = index["found"].astype(bool)
            if same:
                maps = np.load(maps_file, allow_pickle=False)
                if maps.shape == (len(keys), *MAP_SHAPE) and len(found) == len(keys):
                    return maps, found
        except (OSError, ValueError, KeyError, EOFError):
            pass  # damaged or foreign files: computed again below
    start = time.perf_counter()
    parts = Parallel(n_jobs=n_jobs)(delayed(_map_chunk)(items[i:i + chunk])
                                    for i in range(0, len(items), chunk))
    maps = (np.concatenate([p[0] for p in parts]) if parts
            else np.zeros((0, *MAP_SHAPE), np.float16))
    found = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, bool)
    np.save(maps_file, maps)
    np.savez(index_file, keys=np.array(keys, dtype=str), found=found)
    if verbose:
        print(f"{name}: maps of {int(found.sum())} faces in {len(items)} images, "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    return maps, found
