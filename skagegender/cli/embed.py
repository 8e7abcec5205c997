"""``skagegender embed``: face features of images to an .npz file."""

from .._utils import output_file_problem
from ._common import (
    _PER_INPUT_CODES,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    _capped_jobs,
    _error,
    _inputs,
    _named_paths,
    _print_json,
    _printable,
    _stdout_to_stderr,
    add_command,
    add_shared,
)


def add_arguments(sub):
    """Declare ``embed`` and its options on the sub-command parsers ``sub``."""
    p = add_command(sub, "embed", "face features of images to an .npz file", _PER_INPUT_CODES,
                    "Face features of images to an .npz file: one row per input (NaN where no "
                    "face was embedded). Inputs that could not be read or have no face are "
                    "named on stderr with the reason.")
    add_shared(p, "paths", "--files-from")
    p.add_argument("--out", required=True,
                   help="output .npz (.npz is added when missing) with columns embeddings, "
                   "paths, found, errors and notes (e.g. 'first frame of 12 read' for an "
                   "animation) (numbers and strings only: np.load(..., allow_pickle=False) "
                   "reads it); checked before any work: links and special files are refused "
                   "(required)")
    p.add_argument("--backbone", default="sface",
                   help="'sface', an InsightFace pack name or folder, or an ArcFace .onnx file "
                   "(default: %(default)s)")
    p.add_argument("--layers", default=None,
                   help="extra feature blocks: 'age-gender', 'age-gender-dlib' or "
                   "'age-gender-finetuned' (sface only) (default: the identity embedding only)")
    add_shared(p, "--flip", "--cache", "--n-jobs", "--json")
    p.set_defaults(func=run)
    return p


def run(args):
    """Run ``skagegender embed``; returns the exit code."""
    import numpy as np

    from .._utils import atomic_write
    from ..embedding import ArcFaceEmbedder, frames_note

    # numpy's rule, said before the work: the file written ends in .npz.
    out = args.out if args.out.endswith(".npz") else args.out + ".npz"
    for where in dict.fromkeys((args.out, out)):
        problem = output_file_problem(where)
        if problem is not None:
            _error("embed", f"--out {args.out}: "
                            + (problem if where == args.out else f"{where} {problem}"))
            return EXIT_USAGE
    paths = _named_paths("embed", args)
    items = _inputs("embed", paths) if paths is not None else None
    if items is None:
        return EXIT_USAGE
    files = [path for path, error in items if error is None]
    embedder = ArcFaceEmbedder(args.backbone, layers=args.layers, flip_augment=args.flip,
                               n_jobs=_capped_jobs("embed", args.n_jobs, len(files)))
    if args.cache:
        embedder.set_params(cache=args.cache)
    with _stdout_to_stderr():  # e.g. insightface's download and loading messages
        result = embedder.embed(files)
    n, dim = len(items), result.features.shape[1]
    features = np.full((n, dim), np.nan, dtype=np.float32)
    errors = [error and f"{path}: {error}" for path, error in items]
    failed = [error is not None for error in errors]  # unreadable: failed; no face: not
    rows = [i for i, (_, error) in enumerate(items) if error is None]
    features[rows] = result.features
    for i, outcome in zip(rows, result.outcomes):
        errors[i] = outcome.error
        failed[i] = outcome.kind == "load_error"
    found = np.array([e is None for e in errors], dtype=bool)
    notes = [frames_note(path) if error is None else None for path, error in items]
    paths = [path for path, _ in items]
    # Plain numeric and unicode columns only: the file loads with allow_pickle=False.
    columns = {"embeddings": features, "paths": np.array(paths, dtype=str), "found": found,
               "errors": np.array([e or "" for e in errors], dtype=str),
               "notes": np.array([note or "" for note in notes], dtype=str)}
    atomic_write(out, lambda file: np.savez_compressed(file, **columns))
    failed = sum(failed)
    for path, note in zip(paths, notes):
        if note is not None:
            _error("embed", f"{path}: {note}")
    for message in errors:
        if message is not None:
            _error("embed", message)
    summary = {"out": out, "n_images": n, "n_faces_found": int(found.sum()),
               "n_failed": failed, "embedding_dim": int(dim)}
    if args.json:
        _print_json(summary)
    else:
        print(f"{summary['n_faces_found']} of {n} images embedded ({dim} features), "
              f"{failed} could not be read -> {_printable(out)}")
    return EXIT_SOME_FAILED if failed else EXIT_OK

