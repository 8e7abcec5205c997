"""Streaming prediction: per-input results in input order, with a face cache and workers."""

import os
import warnings

#: Inputs per task of :func:`predict_stream` (their faces go through the networks and
#: the heads together, in a worker process when there are several): results come a
#: chunk at a time.
PREDICT_CHUNK = 8


def _predict_chunk(model, paths, targets, coverage, overwrite=False):
    """Predict (and draw) a few inputs: per input ``(faces, records, error)``.

    The faces of all the inputs go through the networks and the heads together.
    Module level so that joblib can send it to worker processes.
    """
    from ..embedding import ImageLoadError
    from ._annotate import annotate_image

    found = model.embedder_.detect_faces_batch(paths)
    readable = [faces for faces in found if not isinstance(faces, ImageLoadError)]
    records = iter(model._face_records(readable, coverage))
    out = []
    for path, target, faces in zip(paths, targets, found):
        if isinstance(faces, ImageLoadError):
            out.append((None, [], faces.reason))
            continue
        face_records = next(records)
        error = (annotate_image(model, path, face_records, target, overwrite=overwrite)
                 if target else None)
        out.append((faces, face_records, error))
    return out


def predict_stream(model, items, *, n_jobs=None, cache=None, coverage=0.8, annotate_dir=None,
                   overwrite=False, warn=None):
    """Age and gender of every face of each input, yielded in input order as each is done.

    Parameters
    ----------
    model : AgeGenderModel
        A fitted model.
    items : list of str or of (str, str or None)
        Image paths, or ``(path, error)`` pairs where a known ``error`` (e.g. an
        empty folder) is passed through as that input's result.
    n_jobs : int or None, default=None
        Worker processes (joblib's meaning). Inputs go :data:`PREDICT_CHUNK` at a time
        (to the workers when there are several); results still come in order.
    cache : str or path-like or None, default=None
        A cache folder (:class:`~skagegender.embedding.FaceCache`): the faces of every
        finished image are kept there, so a rerun only computes the others. Cached
        faces that do not fit their image are computed again.
    coverage : float, default=0.8
        Probability that each face's age interval holds the true age.
    annotate_dir : str or path-like or None, default=None
        Write into this (existing) folder a copy of each photo with every face's box
        and label (:func:`annotate_image`, names from :func:`annotation_targets`).
    overwrite : bool, default=False
        Replace existing files of the same names in ``annotate_dir``.
    warn : callable or None, default=None
        Called with the text of a problem that does not stop the stream (damaged
        cache rows); default :func:`warnings.warn`.

    Yields
    ------
    record : dict
        ``{"path", "faces", "error"}`` per input (``faces`` as
        :meth:`AgeGenderModel.predict_faces` returns them, ``error`` None or the
        reason the input could not be read or annotated), plus ``"annotated"`` (the
        copy's path) with ``annotate_dir`` for inputs without an error and
        ``"note"`` (e.g. "first frame of 12 read") where there is one.
    """
    from ..embedding import FaceCache
    from ._annotate import annotation_targets

    items = [(os.fspath(item), None) if isinstance(item, (str, os.PathLike)) else tuple(item)
             for item in items]
    store = FaceCache(cache, model.embedder_) if cache is not None else None
    targets = annotation_targets(items, annotate_dir)
    return _records(model, items, targets, store, n_jobs=n_jobs, coverage=coverage,
                    overwrite=overwrite, warn=warn or warnings.warn)


def _records(model, items, targets, cache, *, n_jobs, coverage, overwrite, warn):
    from joblib import Parallel, delayed

    from ..embedding import frames_note, item_key
    from ._annotate import annotate_image

    try:
        keys = [item_key(path) if error is None and cache is not None else None
                for path, error in items]
        cached = {}
        if cache is not None:
            cached, damaged = cache.get_checked([path for path, _ in items], keys,
                                                max_bytes=model.embedder_.max_bytes)
            if damaged:
                warn(f"the cache {cache.store.path} held damaged faces for {damaged} "
                     f"input{'s' if damaged != 1 else ''}; "
                     f"{'they are' if damaged != 1 else 'it is'} computed again")
        todo = [i for i, (_, error) in enumerate(items) if error is None and keys[i] not in cached]
        parallel = Parallel(n_jobs=n_jobs, return_as="generator")
        chunks = [todo[k:k + PREDICT_CHUNK] for k in range(0, len(todo), PREDICT_CHUNK)]
        tasks = (([items[i][0] for i in chunk], [targets[i] for i in chunk]) for chunk in chunks)
        if parallel.n_jobs == 1:
            parts = (_predict_chunk(model, paths, chunk_targets, coverage, overwrite)
                     for paths, chunk_targets in tasks)
        else:
            parts = parallel(delayed(_predict_chunk)(model, *task, coverage, overwrite)
                             for task in tasks)
        results = (result for part in parts for result in part)
        for i, (path, error) in enumerate(items):
            if error is not None:
                records = []
            elif keys[i] in cached:
                records = model.predict_faces(path, faces=cached[keys[i]], coverage=coverage)
                error = (annotate_image(model, path, records, targets[i], overwrite=overwrite)
                         if targets[i] else None)
            else:
                faces, records, error = next(results)
                if cache is not None and faces is not None:
                    cache.put(keys[i], faces)
            record = {"path": path, "faces": records, "error": error}
            if targets[i] is not None and error is None:
                record["annotated"] = targets[i]
            note = frames_note(path) if error is None else None
            if note is not None:
                record["note"] = note
            yield record
    finally:
        if cache is not None:
            cache.close()
