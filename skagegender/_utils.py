"""Private helpers free to every subpackage (they import nothing of skagegender).

numpy is imported inside each function: ``import skagegender`` stays light.
"""

#: Lower edges of the age groups 0-12, 13-19, 20-39, 40-59 and 60+: the groups of
#: the metrics' reports (by true age, rounded) and of the heads' calibrators (by
#: predicted age).
AGE_GROUP_EDGES = (13.0, 20.0, 40.0, 60.0)

#: The eight official Adience age groups, as inclusive (low, high) years (60+ ends at
#: 100): the Adience loader's labels and the metrics' Adience classes.
ADIENCE_AGE_GROUPS = ((0, 2), (4, 6), (8, 13), (15, 20), (25, 32), (38, 43), (48, 53), (60, 100))


def check_coverage(coverage):
    """``coverage`` as a float, once it is a number strictly between 0 and 1.

    The one check of the intervals' coverage (heads, models, command line).
    Raises ValueError otherwise (a bool, a string or NaN included).

    >>> from skagegender._utils import check_coverage
    >>> check_coverage(0.8)
    0.8
    """
    import numbers

    if isinstance(coverage, bool) or not (isinstance(coverage, numbers.Real)
                                          and 0 < coverage < 1):
        raise ValueError(f"coverage must be a number strictly between 0 and 1, got {coverage!r}")
    return float(coverage)


def npy_header(fp):
    """Shape and dtype declared by the .npy header at the start of file object ``fp``.

    Reads the header only (numpy caps it at 10,000 bytes), never the data, and
    never unpickles. Raises ValueError (or SyntaxError, TypeError, EOFError)
    for a damaged header.

    Parameters
    ----------
    fp : binary file object positioned at the start of a .npy member

    Returns
    -------
    shape : tuple of int
    dtype : numpy.dtype
    """
    import numpy as np

    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise ValueError(f".npy format version {version} is not read here")
    return shape, dtype


def round_age(ages):
    """Nearest whole year of each age, halves rounded up (4.5 -> 5); NaN stays NaN.

    Parameters
    ----------
    ages : array-like of shape (n_samples,)

    Returns
    -------
    rounded : ndarray of shape (n_samples,), float
    """
    import numpy as np

    return np.floor(np.asarray(ages, dtype=float) + 0.5)


def known_labels(labels):
    """Mask of the labels that are given: not None, NaN or the empty string.

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
        Labels of any dtype: strings with ``""`` or None for unknown, numbers with
        NaN for unknown, integers and booleans (always known).

    Returns
    -------
    known : ndarray of shape (n_samples,), bool

    Examples
    --------
    >>> from skagegender._utils import known_labels
    >>> known_labels(["female", None, "", float("nan"), "male"]).tolist()
    [True, False, False, False, True]
    """
    import numpy as np

    labels = np.asarray(labels)
    if labels.dtype.kind in "fc":
        return ~np.isnan(labels)
    if labels.dtype.kind in "US":
        return labels != labels.dtype.type()
    if labels.dtype.kind != "O":
        return np.ones(labels.shape, dtype=bool)
    # NaN, of any type, is the one value unequal to itself.
    return np.array([v is not None and v == v  # noqa: PLR0124
                     and not (isinstance(v, (str, bytes)) and not v)
                     for v in labels], dtype=bool)


class NotRegularFileError(OSError):
    """A path names a folder, FIFO, device or socket, not a regular file.

    Attributes
    ----------
    mode : int
        The ``st_mode`` of what the path names (``stat.S_ISFIFO(mode)``, ...).
    """

    def __init__(self, path, mode):
        super().__init__(f"{path}: not a regular file")
        self.mode = mode


def open_regular_file(path):
    """Open ``path`` for binary reading only if it is a regular file, without blocking.

    Opening a FIFO for reading waits for a writer and reading a device may never
    end, so the file is opened with ``O_NONBLOCK`` and checked on the open
    descriptor (the path cannot be swapped between the check and the read).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    file : binary file object (close it, or use it in a ``with`` block)
    info : os.stat_result of the open file, for its size

    Raises
    ------
    NotRegularFileError
        For a folder, FIFO, device or socket.
    OSError
        When it cannot be opened (missing, no permission, ...).
    """
    import os
    import stat

    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFileError(path, info.st_mode)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb"), info


def atomic_write(path, write, *, make_parents=False, overwrite=True):
    """Write a file so that readers see the old file or the whole new one, never a part.

    ``write(file)`` fills a temporary file in the same folder, which is flushed
    to disk and then renamed over ``path``; on any error the temporary file is
    removed and an existing ``path`` is untouched. The new file gets the
    permissions of a normally created one (``0o666`` less the umask).

    The temporary file has an unpredictable name and is created exclusively, so
    a link planted in the folder is never written through; renaming replaces a
    link at ``path`` itself, never the file it points to.

    Parameters
    ----------
    path : str or path-like
    write : callable
        Called with the binary file object open for writing.
    make_parents : bool, default=False
        Create missing parent folders first.
    overwrite : bool, default=True
        If False, an existing ``path`` (a file, a link, anything) is left alone and
        FileExistsError is raised; the check and the creation are one step.

    Returns
    -------
    path : pathlib.Path
    """
    import os
    import tempfile
    from pathlib import Path

    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _link_new(tmp, path):
    """Give the finished file ``tmp`` the name ``path`` only if nothing has that name."""
    import errno
    import os

    try:
        os.link(tmp, path)  # fails with EEXIST for any existing name, links included
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK,
                             errno.EXDEV):
            raise
        # A file system without hard links: claim the name exclusively, then fill it.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        os.close(os.open(path, flags, 0o600))
        os.replace(tmp, path)
    else:
        os.unlink(tmp)


def capped_n_jobs(n_jobs, n_tasks):
    """Worker processes worth starting for ``n_tasks`` tasks: at most the tasks and the cores.

    The cores bound applies to joblib's local backends (loky, multiprocessing,
    threading); inside ``joblib.parallel_config(backend="dask")`` only the tasks
    bound does, since the workers are a cluster's.

    Parameters
    ----------
    n_jobs : int or None
        As joblib counts: None or 1 for one process, -1 for all cores, -2 for all
        but one, ...
    n_tasks : int
        Tasks to share out.

    Returns
    -------
    n_jobs : int
        Between 1 and ``min(n_tasks, cores)``.

    Examples
    --------
    >>> from skagegender._utils import capped_n_jobs
    >>> capped_n_jobs(1000, 2)
    2
    >>> capped_n_jobs(None, 50)
    1
    """
    from joblib import cpu_count, effective_n_jobs
    from joblib.parallel import get_active_backend

    wanted = min(effective_n_jobs(n_jobs), n_tasks)
    backend = type(get_active_backend()[0]).__name__
    if backend in ("LokyBackend", "MultiprocessingBackend", "ThreadingBackend",
                   "SequentialBackend"):
        wanted = min(wanted, cpu_count())
    return max(1, wanted)


def output_file_problem(path):
    """Why a file cannot be written at ``path`` (by :func:`atomic_write`), or None.

    Checked before long work so that it fails early, naming the user's path: the
    folder must exist and take a new file (a real file is created and removed
    there), and ``path`` must not be a link, a folder, a device or another
    special file (writing ``/dev/null`` or through a planted link is refused).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    problem : str or None
        A short reason, e.g. "the folder missing/dir does not exist".
    """
    import os
    import stat
    import tempfile

    path = os.fspath(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        return f"cannot be checked ({exc.strerror or exc})"
    if info is not None:
        if stat.S_ISLNK(info.st_mode):
            return "is a symbolic link; links are not written through"
        if stat.S_ISDIR(info.st_mode):
            return "is a folder"
        if not stat.S_ISREG(info.st_mode):
            return "is a device or other special file, not a regular file"
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        return f"the folder {folder} does not exist"
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".skagegender-probe-")
    except OSError as exc:
        return f"cannot write in the folder {folder} ({exc.strerror or exc})"
    os.close(fd)
    os.unlink(probe)
    return None


def user_stacklevel():
    """The ``stacklevel`` that makes a warning point at the user's line.

    Counts the frames, from the function that calls :func:`warnings.warn` outwards,
    that belong to skagegender or scikit-learn (a head fitted inside a ``Pipeline`` or
    a search, a method wrapped by ``_fit_context``), so the warning names the first
    line outside both packages.

    Returns
    -------
    stacklevel : int
        For ``warnings.warn(..., stacklevel=user_stacklevel())``.
    """
    import os
    import sys

    packages = [os.path.dirname(__file__)]
    sklearn = sys.modules.get("sklearn")
    if sklearn is not None and getattr(sklearn, "__file__", None):
        packages.append(os.path.dirname(sklearn.__file__))
    prefixes = tuple(os.path.join(p, "") for p in packages)
    frame = sys._getframe(1)  # the function that warns: stacklevel 1
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(prefixes):
        frame = frame.f_back
        level += 1
    return level
