"""``skagegender evaluate``: score a model on a labeled dataset."""

import math
import os
import sys
import time
from pathlib import Path

from ._common import (
    _COMMAND_CODES,
    EXIT_OK,
    EXIT_USAGE,
    _error,
    _load_model,
    _model_path,
    _print_json,
    _version,
    _write,
    add_command,
    add_shared,
)


def add_arguments(sub):
    """Declare ``evaluate`` and its options on the sub-command parsers ``sub``."""
    p = add_command(sub, "evaluate", "score a model on a labeled dataset", _COMMAND_CODES,
                    "Score a model on a labeled dataset: MAE, one-class-off, CS@5 and gender "
                    "accuracy, overall and per age group (and gender, race). Images whose face "
                    "is not found count as errors (the median training age, gender wrong).")
    add_shared(p, "--dataset", "--root", "--model", "--limit", "--cache", "--n-jobs")
    add_shared(p, "--json", help="print the scores as JSON on stdout, with the model (name or "
               "path and sha256) and skagegender version, floats to 4 decimals (default: off, "
               "a table)")
    p.add_argument("--report", metavar="DIR",
                   help="also write DIR/index.html, one self-contained page with the table "
                   "and plots: predicted against true age, error and interval coverage per "
                   "age group, gender reliability (needs matplotlib: pip install "
                   "\"skagegender[plot]\") (default: no page)")
    p.set_defaults(func=run)
    return p


def _rounded(obj, digits=4):
    """``obj`` with every float rounded to ``digits`` decimals (NaN and infinity become None)."""
    if isinstance(obj, float):
        return None if not math.isfinite(obj) else round(obj, digits)
    if isinstance(obj, dict):
        return {key: _rounded(value, digits) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(value, digits) for value in obj]
    return obj


def _model_description(path):
    """Which model: the shipped one or a file, with the file's sha256."""
    import hashlib

    from ..pretrained import MODELS

    file = _model_path(path)
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if path is None:
        described = {"name": "shipped"}
    elif path in MODELS:
        described = {"name": path}
    else:
        described = {"path": os.path.abspath(path)}
    return {**described, "sha256": digest.hexdigest()}


def run(args):
    """Run ``skagegender evaluate``; returns the exit code."""
    from ..datasets import embed_dataset

    if args.report:  # before the work: the page needs matplotlib and a writable folder
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            _error("evaluate", '--report draws with matplotlib: pip install "skagegender[plot]"')
            return EXIT_USAGE
        try:
            Path(args.report).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _error("evaluate", f"--report {args.report}: {exc.strerror or exc}")
            return EXIT_USAGE
    model = _load_model(args.model)
    if args.n_jobs is not None:
        model.embedder_.set_params(n_jobs=args.n_jobs)
    start = time.perf_counter()
    features, data = embed_dataset(args.dataset, args.root, embedder=model.embedder_,
                                   cache=args.cache, limit=args.limit)
    from ..model import evaluate_model

    result, predictions = evaluate_model(model, features, data, return_predictions=True)
    result["seconds"] = round(time.perf_counter() - start, 2)
    result["dataset"] = args.dataset
    result["model"] = _model_description(args.model)
    result["skagegender_version"] = _version()
    if result.get("interval_coverage") is None:
        _error("evaluate", "warning: this model's age head gives no age intervals; interval "
                           "coverage and width are n/a")
    if args.report:
        from ..metrics import write_evaluation_report

        page = write_evaluation_report(args.report, result, predictions)
        _error("evaluate", f"report -> {page}")
    if args.json:
        _print_json(_rounded(result))
        return EXIT_OK
    from ..metrics import evaluation_text

    _write(sys.stdout, evaluation_text(result))
    return EXIT_OK

