"""``train``'s inputs: the options checked together, tuned heads, datasets, maps."""

from .._utils import output_file_problem
from ._common import _error

#: Largest --params file (the JSON that `tune --json` prints is a few KiB).
MAX_PARAMS_BYTES = 1 << 20


def check_inputs(args):
    """(tuned heads, training sources) of ``train``'s arguments; None after an error.

    Everything is checked before any work: the options together, the output file,
    the tuned parameters (files and studies) and every dataset named.
    """
    if args.shipped_layer and args.recipe != "default":
        _error("train", "--shipped-layer only applies to --recipe default")
        return None
    problem = output_file_problem(args.out)
    if problem is not None:
        _error("train", f"--out {args.out}: {problem}")
        return None
    if args.study_name and not args.study:
        _error("train", "--study-name needs --study STORAGE")
        return None
    if (args.params or args.study) and args.recipe is not None:
        _error("train", f"--recipe {args.recipe} fixes the heads: drop --params/--study")
        return None
    try:  # before the work: a bad file or study is told at once
        tuned = _tuned_heads(args)
    except ValueError as exc:
        _error("train", f"error: {exc}")
        return None
    clash = [f"--{target}-head" for target in tuned
             if getattr(args, f"{target}_head") != "mlp"]
    if clash:
        _error("train", f"{clash[0]} and the tuned {clash[0][2:-5]} parameters both choose "
                        "that head: drop one")
        return None
    try:  # before any work: every dataset named, found and weighed
        sources = _training_sources(args)
    except (ValueError, FileNotFoundError) as exc:
        _error("train", f"error: {exc}")
        return None
    if args.recipe is not None:
        custom = [name for name, value, default in (
            ("--age-head", args.age_head, "mlp"), ("--gender-head", args.gender_head, "mlp"),
            ("--layers", args.layers, "age-gender"), ("--flip", args.flip, False))
            if value != default]
        if custom:
            _error("train", f"--recipe {args.recipe} fixes the features and heads: drop "
                            f"{', '.join(custom)}")
            return None
        if args.recipe == "default" and not args.shipped_layer and not _has_torch():
            _error("train", "--recipe default trains the fine-tuned SFace layer on your faces, "
                            'which needs torch: pip install "skagegender[train]". Or pass '
                            "--shipped-layer to keep the layer shipped with skagegender.")
            return None
    return tuned, sources


def _has_torch():
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def training_maps(args, data):
    """SFace maps of the training images (and copies) for the fine-tuned layer, or None.

    ``data`` is :func:`~skagegender.training.stack_training_data`'s. None (after an
    error message) when there are too few training faces. The maps are kept in
    ``--cache`` when given, else in a temporary folder. Rows whose face was found by
    the embedder but not for the maps (never expected) get NaN features, so nothing
    trains on them.
    """
    import tempfile

    import numpy as np

    from ..training import LAYER_BATCH_SIZE, frozen_maps, layer_training_rows

    n_train = len(layer_training_rows(data.X, data.age, data.groups, datasets=data.dataset,
                                      sample_weight=data.sample_weight))
    if n_train < LAYER_BATCH_SIZE:
        _error("train", f"only {n_train} faces to train the fine-tuned layer on (80 % of the "
                        f"images; it needs at least {LAYER_BATCH_SIZE}, its batch size). Train on "
                        "more images, or pass --shipped-layer to keep the shipped layer.")
        return None
    _error("train", f"computing SFace maps of {len(data.images)} images for the fine-tuned "
                    "layer" + (f" (kept in {args.cache})" if args.cache else ""))
    with tempfile.TemporaryDirectory(prefix="skagegender-maps-") as folder:
        maps, found = frozen_maps(f"train_{'+'.join(args.dataset)}", data.images,
                                  args.cache or folder, n_jobs=args.n_jobs or 1, verbose=False)
    data.X[~found] = np.nan
    return maps


def _params_file(path):
    """(target, Optuna trial params) of a ``tune --json`` output saved in ``path``."""
    import json

    from .._utils import NotRegularFileError, open_regular_file

    where = f"--params {path}"
    try:
        handle, info = open_regular_file(path)
    except NotRegularFileError:
        raise ValueError(f"{where}: not a regular file") from None
    except OSError as exc:
        raise FileNotFoundError(f"{where}: {exc.strerror or exc}") from None
    with handle:
        if info.st_size > MAX_PARAMS_BYTES:
            raise ValueError(f"{where}: {info.st_size} bytes; a parameters file is the small "
                             "JSON object that 'skagegender tune --json' prints")
        try:
            record = json.loads(handle.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{where}: not JSON ({exc})") from None
    params = record.get("best_trial_params") if isinstance(record, dict) else None
    target = record.get("target") if isinstance(record, dict) else None
    if target not in ("age", "gender") or not isinstance(params, dict):
        raise ValueError(f"{where}: expected what 'skagegender tune --json' prints (with "
                         "'target' and 'best_trial_params'); save it with "
                         "'skagegender tune ... --json > best.json'")
    return target, params


def _study_params(storage, name):
    """(target, best trial params) of the stored ``tune`` study ``name``."""
    from ..model_selection import best_head_params

    try:
        return best_head_params(storage, name)
    except ValueError as exc:
        raise ValueError(f"--study {storage}: {exc}") from None


def _tuned_heads(args):
    """Heads built from --params files and --study studies: {"age"|"gender": head}."""
    if not args.params and not args.study:
        return {}
    found = [_params_file(path) for path in args.params or []]
    if args.study:
        dataset = "+".join(args.dataset)  # tune's names are of one dataset
        names = args.study_name or [f"{dataset}-age", f"{dataset}-gender"]
        from ..model_selection import study_names

        stored = set(study_names(args.study))
        if not args.study_name:
            names = [name for name in names if name in stored]
            if not names:
                raise ValueError(f"--study {args.study}: no study named {dataset}-age or "
                                 f"{dataset}-gender ('tune''s default names); it has "
                                 f"{sorted(stored)}: choose with --study-name")
        found += [_study_params(args.study, name) for name in names]
    targets = [target for target, _ in found]
    twice = {target for target in targets if targets.count(target) > 1}
    if twice:
        raise ValueError(f"two sets of tuned parameters for the {min(twice)} head")
    from optuna.trial import FixedTrial

    from ..heads import AgeRegressor, GenderClassifier
    from ..model_selection import default_head_space

    heads = {}
    for target, params in found:
        try:  # the trial replayed through tune's own search space
            chosen = default_head_space(target)(FixedTrial(params))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"the tuned {target} parameters {params} do not fit this "
                             f"version's search space: {exc}") from None
        make = AgeRegressor if target == "age" else GenderClassifier
        heads[target] = make(**chosen)
    return heads


def _training_sources(args):
    """The ``--dataset``/``--root``/``--weight`` sets as TrainingSources (ValueError if bad)."""
    from ..training import TrainingSource, check_sources

    names, roots = args.dataset, args.root
    if len(names) != len(roots):
        raise ValueError(f"{len(names)} --dataset but {len(roots)} --root: give one --root "
                         "after each --dataset")
    weights = args.weight or [1] * len(names)
    if len(weights) != len(names):
        raise ValueError(f"{len(weights)} --weight for {len(names)} --dataset: give one "
                         "--weight per --dataset, in the same order, or none")
    return check_sources([TrainingSource(name, root, weight, args.limit,
                                         args.degraded_copies)
                          for name, root, weight in zip(names, roots, weights)])


def calibration_counts(data, counts):
    """Add to ``counts`` (per dataset) the images and subjects of ``default``'s calibration split."""
    from ..training import calibration_split

    _, held_out = calibration_split(len(data.age), data.groups, datasets=data.dataset)
    for entry in counts:
        mine = held_out[data.dataset[held_out] == entry["name"]]
        entry["n_calibration"] = len(mine)
        prefix = f"{entry['name']}:"  # groups of subject ids, not of single images
        subjects = {g[len(prefix):] for g in (() if data.groups is None else
                                              data.groups[mine]) if
                    isinstance(g, str) and g.startswith(prefix)}
        if subjects:
            entry["calibration_subjects"] = sorted(subjects)
