"""A resumable disk cache of embeddings: one SQLite file per cache folder.

Feature extraction is the cost of everything in skagegender, so
``ArcFaceEmbedder(cache=folder)`` keeps every finished image's row on disk and an
interrupted run picks up where it stopped.

Layout: ``<folder>/embeddings.sqlite``, one table keyed by ``(backbone_key,
item_key)``, marked as ours by its SQLite ``application_id``:

- ``backbone_key`` hashes everything that changes a row: the
  :class:`BackboneSpec` (backbone name, weights sha256, layers, mirror
  averaging, width), the model conversion version and the embedder's
  :meth:`~ArcFaceEmbedder.cache_options` (``detect``, ``face_selection``,
  ``min_score``, ``min_face_size``, ``det_max_side``, ``det_retry_side``
  when set, ``color``, ``max_pixels``, ``max_bytes``). Several backbones share
  one folder safely.
- ``item_key``: for a path, its absolute path, device, inode, size, modification
  time and change time (nanoseconds), so an edited, replaced or re-permissioned
  file is recomputed without reading it (``chmod`` and a rewrite that restores
  the mtime both change the change time); for bytes, arrays and PIL images, the
  sha256 of the content. A copied or restored cache folder therefore misses for
  paths whose files were copied too.

A value is the float32 feature row plus the selected face (box, score,
landmarks), or the :class:`Outcome` of an image without one (no face found, or
a load error, with its message). Outcomes that may change while the file does
not are never stored: access failures (permission denied, I/O errors;
``Outcome.transient``), paths that cannot be stat-ed, and feature rows that are
not finite (a NaN row is not a found face).

Damage (a file that is not ours is never touched):

- the cache folder is a file, or ``embeddings.sqlite`` is not a regular file, or
  is an SQLite database of another program (other tables, another
  ``application_id``): :class:`CacheError` naming the file and what to do;
- ``embeddings.sqlite`` is not a database, truncated or malformed (SQLite reports
  ``SQLITE_NOTADB`` or ``SQLITE_CORRUPT``, on opening or in the middle of a run),
  or it is ours with a wrong table layout: it is renamed (with its ``-wal`` and
  ``-shm`` files) to ``embeddings.sqlite.damaged-<UTC time>``, a new cache is
  started and a :class:`DamagedCacheWarning` says so;
- single damaged rows (a feature or face blob of the wrong length, features
  that are not finite or beyond +-:data:`FEATURE_LIMIT`, a face box that is
  empty, not finite or beyond +-:data:`COORD_LIMIT` pixels, a score outside
  [0, 1], an unknown status): ignored and recomputed, with a
  :class:`DamagedCacheWarning`; :func:`faces_fit_image` checks boxes and
  landmarks against the image itself;
- other SQLite failures (locked for longer than the timeout, read-only, disk
  full): :class:`CacheError`.

Crash safety: the database runs in WAL mode and each finished chunk of images is
written in one transaction, so a killed run loses at most the chunks in flight
and never leaves a half-written row or a corrupt file (SQLite's own guarantee
for a process crash; ``synchronous=NORMAL`` may lose the last transactions, but
not consistency, on power loss).
"""

import hashlib
import os
import stat
import struct
import time
import warnings

import numpy as np

from ._outcome import OK, Outcome

#: Bump when the stored layout or the meaning of a key changes.
CACHE_FORMAT_VERSION = 2
FILENAME = "embeddings.sqlite"
#: SQLite ``application_id`` of our cache files ("SKAG").
APPLICATION_ID = 0x534B4147

# The stored status of each Outcome kind.
_STATUS = {"ok": 0, "no_face": 1, "load_error": 2}
_KIND = {status: kind for kind, status in _STATUS.items()}

_SCHEMA = (
    "CREATE TABLE embeddings ("
    " backbone_key TEXT NOT NULL, item_key TEXT NOT NULL,"
    " status INTEGER NOT NULL, features BLOB, face BLOB, message TEXT,"
    " PRIMARY KEY (backbone_key, item_key)) WITHOUT ROWID"
)
# (name, declared type, not null, primary key position) per column, as PRAGMA table_info says.
_COLUMNS = [("backbone_key", "TEXT", 1, 1), ("item_key", "TEXT", 1, 2),
            ("status", "INTEGER", 1, 0), ("features", "BLOB", 0, 0),
            ("face", "BLOB", 0, 0), ("message", "TEXT", 0, 0)]
# SQLite's verdicts on a file that is damaged rather than busy or unwritable.
_DAMAGED = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}

#: Largest magnitude of a stored feature value. The networks' features lie within
#: about +-1.3 (L2-normalised embeddings, pooled activations, probabilities); a
#: larger value is damage, and would overflow the heads' scaling.
FEATURE_LIMIT = 1000.0
#: Largest magnitude of a stored box or landmark coordinate, in pixels.
COORD_LIMIT = float(2**24)


class CacheError(ValueError):
    """The embedding cache cannot be used; the message names the file and the fix.

    Attributes
    ----------
    usage : bool
        True when the cache named is not usable as given (not a folder, not a
        regular file, another program's database, a folder that cannot be
        created): a usage error. False for failures while running (locked,
        read-only, disk full).
    """

    def __init__(self, message, *, usage=False):
        super().__init__(message)
        self.usage = usage


class DamagedCacheWarning(UserWarning):
    """A damaged cache file was set aside and rebuilt, or damaged rows were ignored."""


# What Pillow raises for damaged image data (truncated, broken stream or EXIF).
_PIL_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error)


def item_key(image):
    """The cache key of one image source, or None when it cannot be keyed.

    Parameters
    ----------
    image : path, bytes, ndarray or PIL image

    Returns
    -------
    key : str or None
        Hex sha256. Paths: absolute path, device, inode, size, mtime and ctime (ns);
        other sources: content.
    """
    digest = hashlib.sha256()
    if isinstance(image, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(image))
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            return None
        digest.update(f"path\0{path}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0"
                      f"{st.st_mtime_ns}\0{st.st_ctime_ns}".encode())
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
        except _PIL_DECODE_ERRORS:  # damaged: not cached; load_image reports why
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
    info : BackboneSpec
        :meth:`ArcFaceEmbedder.backbone_info`.
    options : dict
        Face policy parameters (JSON-able values), :meth:`ArcFaceEmbedder.cache_options`.
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

    values = np.asarray(_FACE.unpack(blob), np.float32)
    return Face(box=values[:4].copy(), score=float(values[4]),
                landmarks=values[5:].reshape(5, 2).copy(), embedding=embedding)


def _plausible_row(row):
    """Finite features within +-FEATURE_LIMIT (a NaN row is not a found face)."""
    return bool(np.isfinite(row).all() and np.abs(row).max(initial=0.0) <= FEATURE_LIMIT)


def _plausible_face(face):
    """A box with x1 < x2 and y1 < y2, a score in [0, 1], coordinates within +-COORD_LIMIT."""
    coords = np.concatenate([face.box.ravel(), face.landmarks.ravel()])
    if not (np.isfinite(coords).all() and np.abs(coords).max() <= COORD_LIMIT):
        return False
    x1, y1, x2, y2 = face.box
    return bool(x1 < x2 and y1 < y2 and 0.0 <= face.score <= 1.0)


def faces_fit_image(faces, width, height):
    """Whether every face's box and landmarks lie on (or near) a ``width x height`` image.

    Detected boxes of faces at the border reach a little outside the image, so
    points up to half the image's size beyond each edge are accepted; a cached
    face further out is damage.

    Parameters
    ----------
    faces : list of Face
    width, height : int
        The image's size as :func:`~skagegender.embedding.load_image` returns it.

    Returns
    -------
    fit : bool
    """
    for face in faces:
        points = np.concatenate([np.asarray(face.box, float).reshape(2, 2),
                                 np.asarray(face.landmarks, float).reshape(-1, 2)])
        if not np.isfinite(points).all():
            return False
        x, y = points[:, 0], points[:, 1]
        if (x.min() < -width / 2 or x.max() > 1.5 * width
                or y.min() < -height / 2 or y.max() > 1.5 * height):
            return False
    return True


def _decode(status, features, face, message, dim):
    """A stored row as (row, face, outcome), or None when the row is damaged."""
    if status == _STATUS["ok"] and not isinstance(status, bool):
        if not isinstance(features, bytes) or len(features) != 4 * dim:
            return None
        row = np.frombuffer(features, dtype=np.float32).copy()
        if not _plausible_row(row):
            return None
        if face is None:
            return row, None, OK
        if not isinstance(face, bytes) or len(face) != _FACE.size:
            return None
        found = _unpack_face(face, row)
        if not _plausible_face(found):
            return None
        return row, found, OK
    kind = _KIND.get(status) if not isinstance(status, bool) else None
    if kind in ("no_face", "load_error") and isinstance(message, str) and message:
        return None, None, Outcome(kind, message)
    return None


class _Damaged(Exception):
    """Our cache file has a layout we did not write."""


class EmbeddingCache:
    """Embedding rows of one backbone configuration in ``<folder>/embeddings.sqlite``.

    Open one per run (it holds a SQLite connection, which neither pickles nor
    crosses a fork); it is a context manager. The module docstring says what
    happens to a damaged or foreign cache file.

    Parameters
    ----------
    folder : str or path
        Created when missing; ``~`` is expanded.
    backbone_key : str
        From :func:`backbone_key`.
    dim : int
        Width of a feature row; stored rows of another width count as damaged.

    Raises
    ------
    CacheError
        When the folder or the file cannot be used (the message says why and what
        to do).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with EmbeddingCache(d, "bb", dim=2) as cache:
    ...         cache.put([("k1", np.ones(2, np.float32), None, Outcome("ok"))])
    ...         row, face, outcome = cache.get(["k1", "k2"])["k1"]
    >>> row
    array([1., 1.], dtype=float32)
    """

    def __init__(self, folder, backbone_key, *, dim):
        folder = os.path.expanduser(os.fspath(folder))
        try:
            os.makedirs(folder, exist_ok=True)
        except FileExistsError:
            raise CacheError(
                f"The embedding cache folder {folder} exists but is not a folder: pass "
                f"cache= a folder (the cache is kept in <folder>/{FILENAME})",
                usage=True,
            ) from None
        except OSError as exc:
            raise CacheError(
                f"Cannot create the embedding cache folder {folder} ({exc.strerror}): "
                "pass cache= a folder you can write to",
                usage=True,
            ) from None
        self.path = os.path.join(folder, FILENAME)
        self.backbone_key = backbone_key
        self.dim = int(dim)
        self._db = None
        self._inode = None
        self._call(lambda db: None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Close the connection (everything written is already committed)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- opening, damage -----------------------------------------------------

    def _connect(self):
        import sqlite3

        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise CacheError(
                f"Cannot use the embedding cache {self.path} ({exc.strerror}): pass cache= "
                "another folder"
            ) from None
        else:
            if not stat.S_ISREG(st.st_mode):
                raise CacheError(
                    f"The embedding cache {self.path} is not a regular file: remove it or "
                    "pass cache= another folder",
                    usage=True,
                )
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._inode = os.stat(self.path).st_ino
        # Read only until the file is known to be ours (WAL mode rewrites the header).
        (application_id,) = self._db.execute("PRAGMA application_id").fetchone()
        tables = [name for (name,) in self._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        columns = [tuple(c[1:4]) + (c[5],) for c in self._db.execute(
            "PRAGMA table_info(embeddings)")]
        ours = application_id == APPLICATION_ID
        fresh = not tables and application_id in (0, APPLICATION_ID)
        if not fresh and columns != _COLUMNS and not ours:
            shown = ", ".join(tables) or "none"
            raise CacheError(
                f"{self.path} is an SQLite database of another program, not a skagegender "
                f"embedding cache (tables: {shown}; application_id {application_id}): move "
                "it away or pass cache= another folder",
                usage=True,
            )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        if fresh:
            self._db.execute("BEGIN IMMEDIATE")
            if not self._db.execute("SELECT 1 FROM sqlite_master").fetchone():
                self._db.execute(_SCHEMA)
            self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self._db.execute("COMMIT")
        elif columns != _COLUMNS:  # ours, with a layout we never write
            raise _Damaged(f"unexpected tables {tables} or columns {columns}")
        elif not ours:  # written before files were marked
            self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    def _call(self, operation):
        """Run ``operation(db)``; set a damaged file aside and retry once."""
        import sqlite3

        for attempt in range(2):
            try:
                if self._db is None:
                    self._connect()
                return operation(self._db)
            except (sqlite3.DatabaseError, _Damaged) as exc:
                damaged = (isinstance(exc, _Damaged)
                           or getattr(exc, "sqlite_errorname", None) in _DAMAGED)
                if not damaged or attempt:
                    self.close()
                    raise CacheError(
                        f"The embedding cache {self.path} cannot be used ({exc}); if another "
                        "run holds it, wait for that run, else pass cache= another folder"
                    ) from exc
                self._set_aside(exc)
            except BaseException:
                self.close()
                raise

    def _set_aside(self, reason):
        """Rename a damaged cache file (and its WAL files) so that a new one is started."""
        self.close()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside, n = f"{self.path}.damaged-{stamp}", 1
        while os.path.lexists(aside):
            aside, n = f"{self.path}.damaged-{stamp}-{n}", n + 1
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = None
        if current != self._inode:  # another process has set it aside already
            return
        try:
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                if os.path.lexists(self.path + suffix):
                    os.replace(self.path + suffix, aside + suffix)
        except OSError as exc:
            raise CacheError(
                f"The embedding cache {self.path} is damaged ({reason}) and cannot be moved "
                f"aside ({exc.strerror}): delete it"
            ) from None
        warnings.warn(
            f"The embedding cache {self.path} is damaged ({reason}); it was moved to "
            f"{aside} and a new cache is started (its images are computed again)",
            DamagedCacheWarning,
            stacklevel=4,
        )

    # -- reading and writing -------------------------------------------------

    def get(self, keys):
        """Stored results for these item keys.

        Returns
        -------
        found : dict of key -> (row or None, Face or None, Outcome)
            Only the keys that are stored intact; ``row`` is a float32 array of
            shape (dim,) with finite values when the outcome is "ok", else None.
        """
        wanted = sorted({k for k in keys if k is not None})

        def read(db):
            stored = []
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                stored += db.execute(
                    "SELECT item_key, status, features, face, message FROM embeddings "
                    f"WHERE backbone_key = ? AND item_key IN ({','.join('?' * len(part))})",
                    [self.backbone_key, *part],
                ).fetchall()
            return stored

        found, damaged = {}, 0
        for key, *value in self._call(read):
            entry = _decode(*value, self.dim)
            if entry is None:
                damaged += 1
            else:
                found[key] = entry
        if damaged:
            warnings.warn(
                f"{damaged} damaged rows of the embedding cache {self.path} were ignored; "
                "their images are computed again",
                DamagedCacheWarning,
                stacklevel=2,
            )
        return found

    def put(self, entries):
        """Store finished items in one transaction.

        Parameters
        ----------
        entries : iterable of (key, row, face, outcome)
            ``row`` a float32 array of shape (dim,) when the :class:`Outcome` is
            "ok" (``face`` may be None), else ignored. Not stored: items with key
            None, a transient outcome, or an "ok" row that is not ``dim`` finite
            values within +-:data:`FEATURE_LIMIT`.
        """
        rows = []
        for key, row, face, outcome in entries:
            if key is None or outcome.transient:
                continue
            if outcome.ok:
                row = np.asarray(row, dtype=np.float32).ravel()
                if row.shape != (self.dim,) or not _plausible_row(row):
                    continue
                rows.append((self.backbone_key, key, _STATUS["ok"], row.tobytes(),
                             _pack_face(face), None))
            else:
                rows.append((self.backbone_key, key, _STATUS[outcome.kind], None, None,
                             outcome.message))
        if not rows:
            return
        import sqlite3

        def write(db):
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?, ?)", rows)
            except BaseException as exc:
                if db.in_transaction:
                    try:
                        db.execute("ROLLBACK")
                    except sqlite3.Error as failed:  # a damaged file may refuse it too
                        exc.add_note(f"and the ROLLBACK that followed failed: {failed}")
                raise
            db.execute("COMMIT")

        self._call(write)

    def __len__(self):
        (count,) = self._call(lambda db: db.execute(
            "SELECT COUNT(*) FROM embeddings WHERE backbone_key = ?", [self.backbone_key]
        ).fetchone())
        return int(count)
