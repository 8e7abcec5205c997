"""Embedding a whole dataset, for training, evaluation and tuning."""

import numpy as np

DATASETS = ("utkface", "fgnet", "adience", "imdb", "wiki", "morph2")


def load_dataset(name, root):
    """Load a dataset by name with its loader from :mod:`skagegender.datasets`.

    Parameters
    ----------
    name : {"utkface", "fgnet", "adience", "imdb", "wiki", "morph2"}
    root : str or path-like

    Returns
    -------
    data : sklearn.utils.Bunch
    """
    from .. import datasets

    if name in ("imdb", "wiki"):
        return datasets.load_imdb_wiki(root, source=name)
    loaders = {"utkface": datasets.load_utkface, "fgnet": datasets.load_fgnet,
               "adience": datasets.load_adience, "morph2": datasets.load_morph2}
    if name not in loaders:
        raise ValueError(f"Unknown dataset {name!r}; choose from {DATASETS}")
    return loaders[name](root)


def subsample(data, limit, random_state=0):
    """The first ``limit`` entries of a random permutation of a dataset's Bunch (or all)."""
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
    embedder : ArcFaceEmbedder or None
        None means the default model's embedder
        (``ArcFaceEmbedder(layers="age-gender")``).
    cache : str, path-like or None
        Folder of the embedding cache; a second run re-uses finished images.
    limit : int or None
        Embed a seeded random subset of this many images.
    progress : bool or None
        A progress bar on stderr; None shows it when stderr is a terminal.

    Returns
    -------
    features : ndarray of shape (n_images, n_features), NaN rows where no face
    data : sklearn.utils.Bunch
        The dataset, restricted to the same images in the same order.
    """
    from sklearn.base import clone

    from ._age_gender import _default_embedder

    data = subsample(load_dataset(name, root), limit)
    embedder = clone(embedder) if embedder is not None else _default_embedder()
    if cache is not None:
        embedder.set_params(cache=str(cache))
    import warnings

    from ..embedding import MissingFacesWarning

    import sys

    from tqdm.auto import tqdm

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
