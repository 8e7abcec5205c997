"""The dataset registry: each dataset by name, a seeded subset, and its embedded features."""

import sys
import warnings

import numpy as np

__all__ = ["DATASETS", "embed_dataset", "load_dataset", "subsample"]

#: The dataset names :func:`load_dataset` knows (the ``--dataset`` choices of the command).
DATASETS = ("utkface", "fgnet", "adience", "imdb", "wiki", "morph2")


def load_dataset(name, root):
    """Load a dataset by name with its loader from :mod:`skagegender.datasets`.

    Parameters
    ----------
    name : {"utkface", "fgnet", "adience", "imdb", "wiki", "morph2"}
        A name of :data:`DATASETS`.
    root : str or path-like
        The dataset's folder, in its official layout.

    Returns
    -------
    data : sklearn.utils.Bunch
        As the dataset's loader returns it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from skagegender.datasets import load_dataset
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "26_1_2_20170116174525125.jpg.chip.jpg").touch()
    >>> load_dataset("utkface", root).age
    array([26.])
    """
    from ._adience import load_adience
    from ._fgnet import load_fgnet
    from ._imdb_wiki import load_imdb_wiki
    from ._morph2 import load_morph2
    from ._utkface import load_utkface

    if name in ("imdb", "wiki"):
        return load_imdb_wiki(root, source=name)
    loaders = {"utkface": load_utkface, "fgnet": load_fgnet, "adience": load_adience,
               "morph2": load_morph2}
    if name not in loaders:
        raise ValueError(f"Unknown dataset {name!r}; choose from {DATASETS}")
    return loaders[name](root)


def subsample(data, limit, random_state=0):
    """The entries of a dataset's Bunch at the first ``limit`` places of a seeded permutation.

    Parameters
    ----------
    data : sklearn.utils.Bunch
        As a loader returns it.
    limit : int or None
        How many entries to keep; None (or at least the number of entries) keeps all.
    random_state : int, default=0
        Seed of the permutation.

    Returns
    -------
    data : sklearn.utils.Bunch
        Every per-entry array, list and ``frame`` restricted to the kept entries, in
        their original order; ``data`` itself when all are kept.
    """
    n = len(data.paths)
    if limit is None or limit >= n:
        return data
    keep = np.sort(np.random.default_rng(random_state).permutation(n)[:limit])
    out = type(data)(**data)
    for key, value in data.items():
        if isinstance(value, np.ndarray) and len(value) == n:
            out[key] = value[keep]
        elif isinstance(value, list) and len(value) == n:
            out[key] = [value[i] for i in keep]
    if data.get("frame") is not None:
        out["frame"] = data["frame"].iloc[keep].reset_index(drop=True)
    return out


def embed_dataset(name, root, *, embedder=None, cache=None, limit=None, progress=None):
    """Load a dataset and embed its images (each image once, with a disk cache).

    Parameters
    ----------
    name : str
        Dataset name, see :func:`load_dataset`.
    root : str or path-like
        The dataset's folder.
    embedder : ArcFaceEmbedder or None
        Cloned before use. None means ``ArcFaceEmbedder(layers="age-gender")``, the
        default model's embedder.
    cache : str, path-like or None
        Folder of the embedding cache; a second run re-uses finished images.
    limit : int or None
        Embed a seeded random subset of this many images (:func:`subsample`).
    progress : bool or None
        A progress bar on stderr; None shows it when stderr is a terminal.

    Returns
    -------
    features : ndarray of shape (n_images, n_features)
        NaN rows where no face was found.
    data : sklearn.utils.Bunch
        The dataset, restricted to the same images in the same order.
    """
    from sklearn.base import clone
    from tqdm.auto import tqdm

    from ..embedding import ArcFaceEmbedder, MissingFacesWarning

    data = subsample(load_dataset(name, root), limit)
    embedder = clone(embedder) if embedder is not None else ArcFaceEmbedder(layers="age-gender")
    if cache is not None:
        embedder.set_params(cache=str(cache))
    show = sys.stderr.isatty() if progress is None else progress
    paths = list(data.paths)
    step = max(embedder.batch_size, 256)  # cache lookups per block stay cheap
    blocks = []
    with warnings.catch_warnings(), tqdm(total=len(paths), desc=f"embed {name}",
                                         file=sys.stderr, disable=not show) as bar:
        warnings.simplefilter("ignore", MissingFacesWarning)
        for start in range(0, len(paths), step):
            blocks.append(embedder.transform(paths[start:start + step]))
            bar.update(len(blocks[-1]))
    if not blocks:
        return np.zeros((0, embedder.fit().embedding_dim_), np.float32), data
    return np.concatenate(blocks), data
