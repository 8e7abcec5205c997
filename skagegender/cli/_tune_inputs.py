"""``tune``'s data: a hostile feature file read safely, or an embedded dataset."""

import math
from pathlib import Path

import numpy as np

from .._archive import READ_ERRORS, ArchiveError, NotZipError, open_zip, zip_members
from .._utils import NotRegularFileError, known_labels, npy_header, open_regular_file

# A feature file has a handful of arrays; more members than this is not one.
_MAX_MEMBERS = 256



class _TuneError(Exception):
    """A problem with the command's inputs: reported on stderr, exit status 2."""



def _labeled(target, age, gender):
    """Targets and the mask of samples that have them."""
    if target == "age":
        y = np.asarray(age, dtype=float)
        return y, np.isfinite(y)
    if gender is None:
        raise _TuneError("the data has no gender labels")
    y = np.asarray(gender)
    return y, known_labels(y)


# What each feature-file array must be: number of dimensions, allowed dtype kinds
# (b bool, i/u integers, f floats, U strings) and the words for error messages.
_COLUMNS = {
    "X": (2, "biuf", "a 2-D array of numbers (samples x features)"),
    "age": (1, "biuf", "a 1-D array of numbers (NaN when unknown)"),
    "gender": (1, "biufU", "a 1-D array of strings ('' when unknown) or numbers"),
    "groups": (1, "biufU", "a 1-D array of strings or integers"),
}


def _array_header(archive, item):
    """Shape and dtype declared in the .npy header of ``item``, without its data."""
    with archive.open(item) as member:
        return npy_header(member)


def _read_features(path, required, optional, max_bytes):
    """The arrays ``required`` and ``optional`` (when present) of the .npz at ``path``.

    The file is hostile until checked: only a regular file of at most ``max_bytes`` is
    opened, pickles are refused, and every array's header (shape, dtype) is checked
    against :data:`_COLUMNS`, the other arrays' length and ``max_bytes`` in total before
    any array data is read. Members other than the wanted ones are never read.
    """
    where = f"--features {path}"
    try:
        fh, info = open_regular_file(path)
    except NotRegularFileError:
        raise _TuneError(f"{where}: not a regular file") from None
    except OSError as exc:
        raise _TuneError(f"{where}: cannot open it: {exc.strerror}") from None
    with fh:
        if info.st_size > max_bytes:
            raise _TuneError(f"{where}: {info.st_size / 2**20:.0f} MiB, over the "
                             f"{max_bytes / 2**20:.0f} MiB limit (--max-features-mb)")
        magic = fh.read(6)
        if magic.startswith(b"\x80"):
            raise _TuneError(f"{where}: the file is a pickle; feature files are read without "
                             "unpickling (save plain arrays with np.savez)")
        if magic == b"\x93NUMPY":
            raise _TuneError(f"{where}: a single .npy array, not an .npz file of named "
                             "arrays (np.savez(path, X=..., age=..., gender=...))")
        try:  # arrays past 4 GiB need zip64 (np.savez writes it)
            archive = open_zip(fh, info.st_size, max_members=_MAX_MEMBERS, allow_zip64=True)
        except NotZipError as exc:
            raise _TuneError(f"{where}: not an .npz file ({exc})") from None
        except ArchiveError as exc:
            raise _TuneError(f"{where}: {exc}") from None
        with archive:
            try:
                infos = zip_members(archive, max_members=_MAX_MEMBERS)
            except ArchiveError as exc:
                raise _TuneError(f"{where}: {exc}") from None
            return _read_members(archive, infos.values(), where, required, optional,
                                 max_bytes)


def _read_members(archive, infos, where, required, optional, max_bytes):
    members = {}
    for item in infos:
        name = item.filename.removesuffix(".npy")
        if name in required or name in optional:
            if name in members:
                raise _TuneError(f"{where}: holds the array {name!r} twice")
            members[name] = item
    missing = [name for name in required if name not in members]
    if missing:
        names = sorted(item.filename.removesuffix(".npy") for item in infos)
        hint = ("; it looks like `skagegender embed` output, which has no labels: save X, "
                "age and gender with np.savez" if "embeddings" in names else "")
        raise _TuneError(f"{where}: lacks the array(s) {missing}; it has {names}{hint}")

    shapes, total = {}, 0
    for name, item in members.items():
        try:
            shape, dtype = _array_header(archive, item)
        except READ_ERRORS as exc:
            raise _TuneError(f"{where}: the array {name!r} cannot be read ({exc})") from None
        ndim, kinds, wanted = _COLUMNS[name]
        if dtype.hasobject:
            raise _TuneError(
                f"{where}: the array {name!r} holds Python objects, which only unpickling "
                "could read, and feature files are never unpickled; store it as "
                f"{wanted} (e.g. np.asarray(values, dtype=str) for labels)"
            )
        if len(shape) != ndim or dtype.kind not in kinds:
            raise _TuneError(f"{where}: the array {name!r} must be {wanted}; it is "
                             f"{len(shape)}-D of dtype {dtype}")
        shapes[name] = shape
        # X is used as float64: count what it becomes, not what the file declares.
        itemsize = max(dtype.itemsize, 8) if name == "X" else dtype.itemsize
        total += math.prod(shape) * itemsize
        if total > max_bytes:
            raise _TuneError(f"{where}: its arrays declare more than the "
                             f"{max_bytes / 2**20:.0f} MiB limit (--max-features-mb), "
                             "counting X as 8-byte floats, as it is used")
    n_samples, n_features = shapes["X"]
    if n_samples == 0 or n_features == 0:
        raise _TuneError(f"{where}: X is empty (shape {shapes['X']})")
    for name, shape in shapes.items():
        if shape[0] != n_samples:
            raise _TuneError(f"{where}: {name} has {shape[0]} entries but X has "
                             f"{n_samples} rows; every array needs one entry per sample")

    arrays = {}
    for name, item in members.items():
        try:
            with archive.open(item) as member:
                arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
            if name == "X":  # one copy at a time: the file's, then the float64 one
                arrays[name] = arrays[name].astype(float, copy=False)
        except MemoryError:
            raise _TuneError(f"{where}: not enough memory to read the array {name!r} (lower "
                             "--max-features-mb to refuse such files early)") from None
        except READ_ERRORS as exc:
            raise _TuneError(f"{where}: the array {name!r} cannot be read ({exc})") from None
    return arrays


def _from_features(args):
    path = Path(args.features)
    arrays = _read_features(path, ("X", args.target), ("groups",),
                            int(args.max_features_mb * 2**20))
    X = arrays.pop("X")  # float64 already (_read_members)
    y, keep = _labeled(args.target, arrays.get("age"), arrays.get("gender"))
    keep &= _finite_rows(X)
    if not keep.all():
        X = X[keep]
    y = y[keep]
    if len(y) < args.cv:
        raise _TuneError(f"--features {path}: {len(y)} samples have both features and "
                         f"the {args.target} label, fewer than --cv {args.cv}")
    groups = arrays.get("groups")
    if groups is not None:
        groups = groups[keep]
        if len(np.unique(groups)) < args.cv:
            raise _TuneError(f"--features {path}: {len(np.unique(groups))} distinct groups "
                             f"among the usable samples, fewer than --cv {args.cv}")
    # the groups are the subjects: a dataset without a protocol of its own
    cv, groups = _dataset_cv(None, None, groups, args)
    return X, y, groups, cv


def _finite_rows(X, block=4096):
    """Mask of the rows of ``X`` without NaN or infinity, a block of rows at a time."""
    mask = np.empty(len(X), dtype=bool)
    for start in range(0, len(X), block):
        mask[start:start + block] = np.isfinite(X[start:start + block]).all(axis=1)
    return mask


def _dataset_cv(name, fold, subject, args):
    """:func:`~skagegender.model_selection.dataset_cv` of the usable samples."""
    from sklearn.utils import Bunch

    from ..model_selection import dataset_cv

    return dataset_cv(Bunch(name=name, fold=fold, subject=subject), args.cv,
                      random_state=args.random_state)


def _from_dataset(args):
    from .. import datasets

    X, data = datasets.embed_dataset(args.dataset, args.root, cache=args.cache,
                                     limit=args.limit)
    y, keep = _labeled(args.target, data.age, data.gender)
    keep &= np.all(np.isfinite(X), axis=1)

    def subset(value):
        return None if value is None else np.asarray(value)[keep]

    cv, groups = _dataset_cv(data.get("name", args.dataset), subset(data.get("fold")),
                             subset(data.get("subject")), args)
    return X[keep], y[keep], groups, cv


def _default_study_name(args):
    if args.features:
        return f"{Path(args.features).stem}-{args.target}"
    if not args.dataset or not args.root:
        raise _TuneError("give --dataset and --root (or precomputed --features)")
    return f"{args.dataset}-{args.target}"

