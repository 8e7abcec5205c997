"""Every face of every finished image, kept in an embedding cache folder."""

from ._cache import EmbeddingCache, faces_fit_image
from ._io import ImageLoadError, peek_image
from ._outcome import Outcome

#: Most faces of one image that a :class:`FaceCache` keeps (when the embedder sets no
#: ``max_faces``); an image with more stored rows is computed again.
CACHED_FACES_LIMIT = 1000


class FaceCache:
    """Every face of every finished image, in an embedding cache folder.

    Where :meth:`ArcFaceEmbedder.embed` keeps one face per image, this keeps all of
    them: the rows go to the same :class:`EmbeddingCache` file under their own
    backbone key (the embedder's key plus "every face"), face ``j`` of an item
    under ``<item key>:<j>`` and a "no_face" outcome after the last. Unreadable
    inputs are not cached (they are quick to retry).

    Parameters
    ----------
    folder : str or path-like
        The cache folder (created when missing).
    embedder : ArcFaceEmbedder
        The fitted embedder whose faces are kept.

    Attributes
    ----------
    store : EmbeddingCache
        The cache file.
    limit : int
        Most faces kept per image: the embedder's ``max_faces``, else
        :data:`CACHED_FACES_LIMIT`.
    too_many : int
        Items seen by :meth:`get` with more than ``limit`` stored faces.
    """

    def __init__(self, folder, embedder):
        self.store = EmbeddingCache(folder, embedder.cache_key(faces="every"),
                                    dim=embedder.backbone_info().embedding_dim)
        self.limit = embedder.max_faces or CACHED_FACES_LIMIT
        self.too_many = 0

    def get(self, keys):
        """Cached faces per key (a list, maybe empty), for the keys fully stored.

        An item with more than ``limit`` stored faces is not returned (it is
        computed again); ``too_many`` counts such items.

        Parameters
        ----------
        keys : list of str or None
            Item keys (:func:`item_key`); None entries are skipped.

        Returns
        -------
        faces : dict
            ``{key: [Face, ...]}`` for the keys whose faces are all stored.
        """
        faces = {k: [] for k in keys if k is not None}
        pending, done, j = list(faces), {}, 0
        while pending:
            if j > self.limit:  # more rows than an image may have: damage
                self.too_many += len(pending)
                break
            stored = self.store.get([f"{k}:{j}" for k in pending])
            still = []
            for k in pending:
                hit = stored.get(f"{k}:{j}")
                if hit is None:
                    continue  # not (fully) cached
                _, face, outcome = hit
                if outcome.ok:
                    faces[k].append(face)
                    still.append(k)
                else:
                    done[k] = faces[k]
            pending, j = still, j + 1
        return done

    def get_checked(self, paths, keys, *, max_bytes):
        """:meth:`get`, less the items whose faces do not fit their image.

        Parameters
        ----------
        paths : list of str
            The image of each key.
        keys : list of str or None
            Item keys, one per path.
        max_bytes : int
            Largest image file read (to learn its size).

        Returns
        -------
        faces : dict
            As :meth:`get`, without the damaged items.
        n_damaged : int
            Items left out as damaged (too many rows, or faces off their image):
            they are to be computed again.
        """
        before = self.too_many
        cached = self.get(keys)
        damaged = self.too_many - before
        for path, key in zip(paths, keys):
            if key not in cached or not cached[key]:
                continue
            try:
                width, height, _ = peek_image(path, max_bytes=max_bytes)
            except ImageLoadError:
                fits = False  # changed since it was cached: read it again
            else:
                fits = faces_fit_image(cached[key], width, height)
            if not fits:
                del cached[key]
                damaged += 1
        return cached, damaged

    def put(self, key, faces):
        """Store every face of the item ``key`` (nothing when over ``limit`` or no key)."""
        if key is None or len(faces) > self.limit:
            return
        entries = [(f"{key}:{j}", face.embedding, face, Outcome("ok"))
                   for j, face in enumerate(faces)]
        entries.append((f"{key}:{len(faces)}", None, None, Outcome("no_face", "no more faces")))
        self.store.put(entries)

    def close(self):
        """Close the cache file."""
        self.store.close()
