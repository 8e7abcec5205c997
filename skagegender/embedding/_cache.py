"""A resumable disk cache of embeddings: one SQLite file per cache folder.

Feature extraction is the cost of everything in skagegender, so
``ArcFaceEmbedder(cache=folder)`` keeps every finished image's row on disk and an
interrupted run picks up where it stopped.

Layout: ``<folder>/embeddings.sqlite``, one table keyed by ``(backbone_key,
item_key)``:

- ``backbone_key`` hashes everything that changes a row: :meth:`backbone_info`
  (backbone name, weights sha256, layers, mirror averaging, width), the model
  conversion version and the embedder's face policy (``detect``,
  ``face_selection``, ``min_score``, ``min_face_size``, ``det_max_side``,
  ``color``, ``max_pixels``). Several backbones share one folder safely.
- ``item_key``: for a path, its absolute path + size + modification time
  (nanoseconds), so an edited or replaced file is recomputed without reading it;
  for bytes, arrays and PIL images, the sha256 of the content.

A value is the float32 feature row plus the selected face (box, score,
landmarks), or a marker: "no face found", or a load error. Load errors are kept
only for items with a content or stat key, so fixing a corrupt file (which
changes its size or mtime) recomputes it; a path that cannot be stat-ed
(missing, permission denied) gets no key and is never cached.

Crash safety: the database runs in WAL mode and each finished chunk of images is
written in one transaction, so a killed run loses at most the chunks in flight
and never leaves a half-written row or a corrupt file (SQLite's own guarantee
for a process crash; ``synchronous=NORMAL`` may lose the last transactions, but
not consistency, on power loss).
"""

import hashlib
import os
import struct

import numpy as np

#: Bump when the stored layout or the meaning of a key changes.
CACHE_FORMAT_VERSION = 1
FILENAME = "embeddings.sqlite"

OK, NO_FACE, LOAD_ERROR = 0, 1, 2


def item_key(image):
    """The cache key of one image source, or None when it cannot be keyed.

    Parameters
    ----------
    image : path, bytes, ndarray or PIL image

    Returns
    -------
    key : str or None
        Hex sha256. Paths: absolute path, size and mtime (ns); other sources: content.
    """
    digest = hashlib.sha256()
    if isinstance(image, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(image))
        try:
            st = os.stat(path)
        except OSError:
            return None
        digest.update(f"path\0{path}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    elif isinstance(image, (bytes, bytearray, memoryview)):
        digest.update(b"bytes\0")
        digest.update(image)
    elif isinstance(image, np.ndarray):
        digest.update(f"array\0{image.dtype.str}\0{image.shape}\0".encode())
        digest.update(np.ascontiguousarray(image).data)
    elif hasattr(image, "tobytes") and hasattr(image, "mode") and hasattr(image, "size"):
        # PIL: pixels, mode, size, and the EXIF orientation load_image applies.
        try:
            orientation = image.getexif().get(0x0112, 1)
            pixels = image.tobytes()
        except Exception:
            return None
        digest.update(f"pil\0{image.mode}\0{image.size}\0{orientation}\0".encode())
        digest.update(pixels)
    else:
        return None
    return digest.hexdigest()


def backbone_key(info, options):
    """Hash of a backbone description and the options that change its output.

    Parameters
    ----------
    info : dict
        :meth:`ArcFaceEmbedder.backbone_info`.
    options : dict
        Face policy parameters (JSON-able values).
    """
    from ._assets import _CONVERSION_VERSION

    text = repr((CACHE_FORMAT_VERSION, _CONVERSION_VERSION, sorted(info.items()),
                 sorted(options.items())))
    return hashlib.sha256(text.encode()).hexdigest()


_FACE = struct.Struct("<15f")  # box (4), score (1), landmarks (10)


def _pack_face(face):
    if face is None:
        return None
    values = [*np.asarray(face.box, np.float32).ravel()[:4], float(face.score),
              *np.asarray(face.landmarks, np.float32).ravel()[:10]]
    return _FACE.pack(*values)


def _unpack_face(blob, embedding):
    from ._detection import Face

    if blob is None:
        return None
    values = np.asarray(_FACE.unpack(blob), np.float32)
    return Face(box=values[:4].copy(), score=float(values[4]),
                landmarks=values[5:].reshape(5, 2).copy(), embedding=embedding)


class EmbeddingCache:
    """Embedding rows of one backbone configuration in ``<folder>/embeddings.sqlite``.

    Open one per run (it holds a SQLite connection, which neither pickles nor
    crosses a fork); it is a context manager.

    Parameters
    ----------
    folder : str or path
        Created when missing; ``~`` is expanded.
    backbone_key : str
        From :func:`backbone_key`.
    dim : int
        Width of a feature row; stored rows of another width are ignored.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with EmbeddingCache(d, "bb", dim=2) as cache:
    ...         cache.put([("k1", np.ones(2, np.float32), None, None)])
    ...         row, face, error = cache.get(["k1", "k2"])["k1"]
    >>> row
    array([1., 1.], dtype=float32)
    """

    def __init__(self, folder, backbone_key, *, dim):
        import sqlite3

        folder = os.path.expanduser(os.fspath(folder))
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, FILENAME)
        self.backbone_key = backbone_key
        self.dim = int(dim)
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS embeddings ("
            " backbone_key TEXT NOT NULL, item_key TEXT NOT NULL,"
            " status INTEGER NOT NULL, features BLOB, face BLOB, message TEXT,"
            " PRIMARY KEY (backbone_key, item_key)) WITHOUT ROWID"
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Close the connection (everything written is already committed)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def get(self, keys):
        """Stored results for these item keys.

        Returns
        -------
        found : dict of key -> (row or None, Face or None, error message or None)
            Only the keys that are stored; ``row`` is a float32 array of shape (dim,).
        """
        wanted = sorted({k for k in keys if k is not None})
        found = {}
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            query = (
                "SELECT item_key, status, features, face, message FROM embeddings "
                f"WHERE backbone_key = ? AND item_key IN ({','.join('?' * len(part))})"
            )
            for key, status, blob, face, message in self._db.execute(
                query, [self.backbone_key, *part]
            ):
                if status == OK:
                    if blob is None or len(blob) != 4 * self.dim:
                        continue
                    row = np.frombuffer(blob, dtype=np.float32).copy()
                    found[key] = (row, _unpack_face(face, row), None)
                else:
                    found[key] = (None, None, message or "unknown error")
        return found

    def put(self, entries):
        """Store finished items in one transaction.

        Parameters
        ----------
        entries : iterable of (key, row, face, error)
            ``row`` a float32 array of shape (dim,) when embedded (error None), else
            None with ``error`` the message; items with key None are skipped.
        """
        rows = []
        for key, row, face, error in entries:
            if key is None:
                continue
            if error is None:
                blob = np.ascontiguousarray(row, dtype=np.float32).tobytes()
                rows.append((self.backbone_key, key, OK, blob, _pack_face(face), None))
            else:
                status = NO_FACE if error.endswith("no face found") else LOAD_ERROR
                rows.append((self.backbone_key, key, status, None, None, error))
        if not rows:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?, ?)", rows
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def __len__(self):
        (count,) = self._db.execute(
            "SELECT COUNT(*) FROM embeddings WHERE backbone_key = ?", [self.backbone_key]
        ).fetchone()
        return int(count)
