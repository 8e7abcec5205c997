"""``skagegender predict``: age and gender of every face in images."""

import sys
from pathlib import Path

from ._common import (
    _PER_INPUT_CODES,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    _capped_jobs,
    _coverage,
    _error,
    _inputs,
    _json,
    _load_model,
    _named_paths,
    _no_interrupt,
    _printable,
    _progress,
    _write,
    add_command,
    add_shared,
)

#: Age interval coverage when --coverage is not given.
DEFAULT_COVERAGE = 0.8


def add_arguments(sub):
    """Declare ``predict`` and its options on the sub-command parsers ``sub``."""
    from ..model import PREDICT_CHUNK

    p = add_command(
        sub, "predict", "age and gender of every face in images", _PER_INPUT_CODES,
        "Age and gender of every face in images. Faces are numbered left to right by "
        "the centre of their box (ties top to bottom), in the output and in --annotate "
        "pictures. Results are written as soon as each input is done, in input order; "
        "in plain mode unreadable inputs are reported on stderr. A plain line reads "
        "'PATH face N: age 31 (25-38), female (93%), box [x1,y1,x2,y2], score 0.93': "
        "the estimated age in years; in brackets the age interval that holds the true "
        "age with probability --coverage (80 % by default; absent for a model without "
        "intervals); the predicted gender and its probability (at least 50 %); "
        "the face's box in pixels (left, top, right, bottom); and the detector's "
        "confidence, 0 to 1, that the box holds a face (faces under 0.7 are not "
        "reported). An image without a face prints 'PATH: no face found'.")
    add_shared(p, "paths", "--files-from", "--model")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--jsonl", action="store_true",
                      help="write one JSON object {path, faces, error} per input, one line each, "
                      "as soon as that input is done (after Ctrl-C the finished lines stay) "
                      "(default: off, plain text lines)")
    add_shared(form, "--json", help="write one JSON array of those objects when all inputs "
               "are done; for small calls (default: off, plain text lines)")
    p.add_argument("--annotate", metavar="DIR",
                   help="write into DIR a copy of each photo with every face's box and label "
                   "'number: age gender', same size and format as the photo (same-named photos "
                   "get -2, -3 ... suffixes) (default: no copies)")
    p.add_argument("--overwrite", action="store_true",
                   help="with --annotate, replace existing files of the same names in DIR "
                   "(links and special files are never replaced) (default: off, such an "
                   "input is reported as not annotated)")
    add_shared(p, "--n-jobs", help=f"worker processes, -1 for all cores; inputs go to the "
               f"workers {PREDICT_CHUNK} at a time and results still come in input order "
               "(default: one process)")
    add_shared(p, "--cache", help="embedding cache folder: the faces of every finished image "
               "are kept there, so a rerun (e.g. after Ctrl-C) only computes the others "
               "(default: no cache)")
    p.add_argument("--coverage", type=_coverage, default=None,
                   help="probability that the printed age interval holds the true age, "
                   "between 0 and 1; with a model whose age head gives no intervals (the "
                   f"shipped 'fast') a warning says so (default: {DEFAULT_COVERAGE})")
    p.set_defaults(func=run)
    return p


def _plain_lines(path, records):
    name = _printable(path)
    if not records:
        return f"{name}: no face found\n"
    lines = []
    for i, face in enumerate(records, start=1):
        lo_hi = (f" ({face['age_interval'][0]:.0f}-{face['age_interval'][1]:.0f})"
                 if face["age_interval"] else "")
        gender = (f"{face['gender']} ({face['gender_probability']:.0%})"
                  if face["gender"] else "gender unknown")
        box = ",".join(f"{v:.0f}" for v in face["box"])
        lines.append(f"{name} face {i}: age {face['age']:.0f}{lo_hi}, {gender}, "
                     f"box [{box}], score {face['score']:.2f}\n")
    return "".join(lines)


def run(args):
    """Run ``skagegender predict``; returns the exit code."""
    paths = _named_paths("predict", args)
    items = _inputs("predict", paths) if paths is not None else None
    if items is None:
        return EXIT_USAGE
    if args.annotate:
        try:
            Path(args.annotate).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _error("predict", f"--annotate {args.annotate}: {exc.strerror or exc}")
            return EXIT_USAGE
    model = _load_model(args.model)
    from ..model import has_intervals, predict_stream

    if args.coverage is not None and not has_intervals(model):
        _error("predict", f"warning: --coverage {args.coverage}: this model's age head gives "
                          "no age intervals, so none is printed")
    records, failed, done = [], 0, 0
    show = sys.stderr.isatty() and not sys.stdout.isatty() and len(items) > 1
    n_jobs = _capped_jobs("predict", args.n_jobs, sum(error is None for _, error in items))
    stream = predict_stream(
        model, items, n_jobs=n_jobs, cache=args.cache or None,
        coverage=DEFAULT_COVERAGE if args.coverage is None else args.coverage,
        annotate_dir=args.annotate or None, overwrite=args.overwrite,
        warn=lambda message: _error("predict", f"warning: {message}"))
    try:
        for record in _progress(stream, len(items), "predict", show):
            path, faces, error = record["path"], record["faces"], record["error"]
            failed += error is not None
            with _no_interrupt():  # a result is written and counted, or neither
                if args.json:
                    records.append(record)
                elif args.jsonl:
                    _write(sys.stdout, _json(record) + "\n")
                else:
                    _write(sys.stdout, _plain_lines(path, faces) if faces or not error else "")
                    for message in (record.get("note"), error):
                        if message is not None:
                            _error("predict", f"{path}: {message}")
                done += 1
    except KeyboardInterrupt:
        if args.json:
            _write(sys.stdout, _json(records) + "\n")
        _error("predict", f"interrupted: {done} of {len(items)} inputs done")
        return EXIT_INTERRUPTED
    finally:
        stream.close()
    if args.json:
        _write(sys.stdout, _json(records) + "\n")
    return EXIT_SOME_FAILED if failed else EXIT_OK
