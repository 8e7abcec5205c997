"""The ``skagegender`` command line.

Sub-commands: ``predict`` (age and gender of every face), ``embed`` (features to
an .npz file), ``evaluate`` (scores on a labeled dataset), ``train`` (fit and
save a model) and ``tune`` (Optuna search over heads). With ``--json`` or
``--jsonl`` the only thing on stdout is JSON; progress, warnings and errors go to
stderr.

Exit codes: 0 success (an image without a face is a success); 1 when some
inputs could not be read (the others are still reported); 2 for usage errors
and when there is nothing to do (e.g. only empty folders); 130 after Ctrl-C.
"""

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
import unicodedata
from collections import Counter
from contextlib import contextmanager, nullcontext
from pathlib import Path

from ._utils import capped_n_jobs, known_labels, output_file_problem

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EMPTY_FOLDER = "no image files in this folder"
#: Inputs per parallel task of ``predict --n-jobs``: results are written a chunk at a time.
PREDICT_CHUNK = 4
FEW_FACES = 1000
#: Fewest training faces for the fine-tuned layer (its batch size).
LAYER_BATCH = 128
#: Most faces of one image that ``predict --cache`` keeps (when the model sets no
#: ``max_faces``); an image with more stored rows is computed again.
CACHED_FACES_LIMIT = 1000
#: Longest line of a ``--files-from`` list.
MAX_LIST_LINE = 65536
#: predict's age interval coverage when --coverage is not given.
DEFAULT_COVERAGE = 0.8


def _version():
    from . import __version__

    return __version__


def _expand(paths):
    """Every named path in order, folders expanded to their image files (sorted, recursive).

    Returns
    -------
    items : list of (str, str or None)
        ``(path, error)``: a named file is always listed (the loader decides whether
        it can be read); a folder without image files is listed with an error.
    skipped : collections.Counter
        Suffixes of the files inside folders that were skipped (not in IMAGE_SUFFIXES).
    """
    from .embedding import IMAGE_SUFFIXES

    items, skipped = [], Counter()
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            items.append((os.fspath(raw), None))
            continue
        found = []
        for child in sorted(path.rglob("*")):
            if child.is_dir():
                continue
            suffix = child.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                found.append((str(child), None))
            else:
                skipped[suffix or "(no suffix)"] += 1
        items.extend(found or [(os.fspath(raw), EMPTY_FOLDER)])
    return items, skipped


def _read_path_list(command, name):
    """The paths listed in ``name`` (``-``: standard input), one per line; None on error.

    Empty lines are skipped; a trailing carriage return is dropped. Bytes that are
    not valid in the file system's encoding are kept as Python keeps them in file
    names, so every name a shell would pass works.
    """
    try:
        handle = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115
    except OSError as exc:
        _error(command, f"--files-from {name}: {exc.strerror or exc}")
        return None
    paths = []
    try:
        with handle if name != "-" else nullcontext(handle):
            for number, line in enumerate(iter(lambda: handle.readline(MAX_LIST_LINE), b""),
                                          start=1):
                if not line.endswith(b"\n") and len(line) == MAX_LIST_LINE:
                    _error(command, f"--files-from {name}: line {number} is over "
                                    f"{MAX_LIST_LINE} bytes; not a list of paths")
                    return None
                line = line.rstrip(b"\n").removesuffix(b"\r")
                if line:
                    paths.append(os.fsdecode(line))
    except OSError as exc:
        _error(command, f"--files-from {name}: {exc.strerror or exc}")
        return None
    return paths


def _named_paths(command, args):
    """The paths named on the command line and in ``--files-from``; None on error."""
    paths = list(args.paths)
    if args.files_from is not None:
        listed = _read_path_list(command, args.files_from)
        if listed is None:
            return None
        paths += listed
    if not paths:
        _error(command, "no paths given: name image files or folders, or --files-from FILE "
                        "('-' for standard input)")
        return None
    return paths


def _capped_jobs(command, n_jobs, n_inputs):
    """``--n-jobs`` capped at the inputs and the cores, with a warning when it was more."""
    if n_jobs in (None, 1):
        return n_jobs
    capped = capped_n_jobs(n_jobs, max(n_inputs, 1))
    if n_jobs > capped:
        from joblib import cpu_count

        _error(command, f"warning: --n-jobs {n_jobs}: starting {capped} worker "
                        f"process{'es' if capped != 1 else ''} ({n_inputs} "
                        f"input{'s' if n_inputs != 1 else ''}, {cpu_count()} cores)")
    return capped


@contextmanager
def _stdout_to_stderr():
    """Send whatever else prints to stdout (libraries, worker processes) to stderr.

    Both ``sys.stdout`` and file descriptor 1 are redirected, so that processes
    started inside the block inherit the redirection too.
    """
    from contextlib import redirect_stdout

    sys.stdout.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no descriptor 1 or 2: Python-level redirection only
        saved = None
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        if saved is not None:
            sys.stderr.flush()
            os.dup2(saved, 1)
            os.close(saved)


def _inputs(command, paths):
    """:func:`_expand` ``paths``, reporting skipped suffixes on stderr; None if nothing to do."""
    items, skipped = _expand(paths)
    if skipped:
        from .embedding import IMAGE_SUFFIXES

        n = sum(skipped.values())
        _error(command, f"skipped {n} file{'s' if n != 1 else ''} with unsupported suffixes: "
                        f"{', '.join(sorted(skipped))} (read: {' '.join(sorted(IMAGE_SUFFIXES))})")
    if any(error != EMPTY_FOLDER for _, error in items):
        return items
    for path, error in items:
        _error(command, f"{path}: {error}")
    _error(command, "nothing to do: no image files in the given paths")
    return None


def _printable(text):
    """``text`` on one line: control, format and separator characters escaped.

    Newlines in a file name would otherwise start a fake output line; undecodable
    bytes of a file name (kept by Python as lone surrogates) become ``\\xNN``.
    """
    out = []
    for ch in text:
        category = unicodedata.category(ch)
        if category in ("Cc", "Cf", "Zl", "Zp"):
            code = ord(ch)
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(
                ch, f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"))
        elif category == "Cs":
            code = ord(ch)
            out.append(f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


@contextmanager
def _no_interrupt():
    """Defer Ctrl-C until the block is done, so that a result is never cut or left uncounted.

    A SIGINT arriving inside the block is held and re-raised (as the previous
    handler would) when the block ends. Blocking the signal with a mask is not
    enough: it may be delivered to another thread (onnxruntime's, joblib's).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught and callable(previous):
            previous(signal.SIGINT, None)


def _write(stream, text):
    with _no_interrupt():
        stream.write(text)
        stream.flush()


def _error(command, message):
    _write(sys.stderr, f"skagegender {command}: {_printable(str(message))}\n")


def _progress(iterable, total, desc, enabled):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, leave=False)


def _model_path(model):
    """``--model``: None (the shipped default), a shipped name, or a model file path.

    A shipped name (``default``, ``fast``) wins over a same-named file in the
    working directory; write ``./fast`` for such a file.
    """
    from .pretrained import MODELS, model_file

    if model is None or model in MODELS:
        return model_file(model or "default")
    return Path(model)


def _load_model(model):
    from .model import AgeGenderModel

    return AgeGenderModel.load(_model_path(model))


def _json(obj, *, indent=None):
    return json.dumps(obj, indent=indent, allow_nan=False)


def _print_json(obj):
    _write(sys.stdout, _json(obj, indent=2) + "\n")


def _positive_or_all(text):
    """``--n-jobs``: a positive number of processes, or -1 (and below) as joblib counts."""
    value = int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must not be 0 (1 = one process, -1 = all cores)")
    return value


def _whole_number(text):
    """argparse type of --weight: a whole number >= 0."""
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return int(text)


def _share(text):
    """argparse type of --degraded-copies: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text!r}")
    return value


# -- predict -------------------------------------------------------------------

def _coverage(text):
    """argparse type of --coverage: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number strictly between 0 and 1, got {text!r}")
    return value


def _predict_chunk(model, paths, targets, coverage, overwrite=False):
    """Predict (and draw) a few inputs: per input ``(faces, records, error)``.

    Module level so that joblib can send it to worker processes.
    """
    from .embedding import ImageLoadError

    out = []
    for path, target in zip(paths, targets):
        try:
            faces = model.embedder_.detect_faces(path)
        except ImageLoadError as exc:
            out.append((None, [], exc.reason))
            continue
        records = model.predict_faces(path, faces=faces, coverage=coverage)
        error = _annotate(model, path, records, target, overwrite) if target else None
        out.append((faces, records, error))
    return out


class _FaceCache:
    """Every face of every finished image, in an embedding cache folder.

    ``predict`` needs all faces of a photo, where ``embed`` keeps one: its rows go
    to the same :class:`~skagegender.embedding.EmbeddingCache` file under their
    own backbone key (the embedder's key plus "every face"), face ``j`` of an
    item under ``<item key>:<j>`` and a "no_face" outcome after the last.
    Unreadable inputs are not cached (they are quick to retry).
    """

    def __init__(self, folder, embedder):
        from .embedding import EmbeddingCache

        self.store = EmbeddingCache(folder, embedder.cache_key(faces="every"),
                                    dim=embedder.backbone_info().embedding_dim)
        self.limit = embedder.max_faces or CACHED_FACES_LIMIT
        self.too_many = 0

    def get(self, keys):
        """Cached faces per key (a list, maybe empty), for the keys fully stored.

        An item with more than ``limit`` stored faces is not returned (it is
        computed again); ``too_many`` counts such items.
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

    def put(self, key, faces):
        if key is None or len(faces) > self.limit:
            return
        from .embedding import Outcome

        entries = [(f"{key}:{j}", face.embedding, face, Outcome("ok"))
                   for j, face in enumerate(faces)]
        entries.append((f"{key}:{len(faces)}", None, None, Outcome("no_face", "no more faces")))
        self.store.put(entries)

    def close(self):
        self.store.close()


def _checked_cache(cache, items, keys, max_bytes):
    """Cached faces per key, less those that do not fit their image (computed again)."""
    from .embedding import ImageLoadError
    from .embedding._cache import faces_fit_image
    from .embedding._io import peek_image

    cached = cache.get(keys)
    damaged = cache.too_many
    for (path, _), key in zip(items, keys):
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
    if damaged:
        _error("predict", f"warning: the cache {cache.store.path} held damaged faces for "
                          f"{damaged} input{'s' if damaged != 1 else ''}; "
                          f"{'they are' if damaged != 1 else 'it is'} computed again")
    return cached


def _predict_stream(model, items, targets, *, n_jobs, cache, coverage, overwrite=False):
    """Yield ``(path, records, error)`` per item, in input order, as each is done."""
    from joblib import Parallel, delayed

    from .embedding import item_key

    keys = [item_key(path) if error is None and cache is not None else None
            for path, error in items]
    cached = (_checked_cache(cache, items, keys, model.embedder_.max_bytes)
              if cache is not None else {})
    todo = [i for i, (_, error) in enumerate(items) if error is None and keys[i] not in cached]
    parallel = Parallel(n_jobs=n_jobs, return_as="generator")
    size = 1 if parallel.n_jobs == 1 else PREDICT_CHUNK
    chunks = [todo[k:k + size] for k in range(0, len(todo), size)]
    tasks = (([items[i][0] for i in chunk], [targets[i] for i in chunk]) for chunk in chunks)
    if size == 1:
        parts = (_predict_chunk(model, paths, chunk_targets, coverage, overwrite)
                 for paths, chunk_targets in tasks)
    else:
        parts = parallel(delayed(_predict_chunk)(model, *task, coverage, overwrite)
                         for task in tasks)
    results = (result for part in parts for result in part)
    for i, (path, error) in enumerate(items):
        if error is not None:
            yield path, [], error
        elif keys[i] in cached:
            records = model.predict_faces(path, faces=cached[keys[i]], coverage=coverage)
            yield path, records, (_annotate(model, path, records, targets[i], overwrite)
                                  if targets[i] else None)
        else:
            faces, records, error = next(results)
            if cache is not None and faces is not None:
                cache.put(keys[i], faces)
            yield path, records, error


def _annotation_targets(items, folder):
    """One output file per readable input in ``folder``: the input's name, made unique.

    Same-named inputs from different folders get ``-2``, ``-3`` ... before the
    suffix; no target is ever one of the inputs. Formats keep the input's suffix,
    except PGM/PBM (written as colour .ppm) and unknown suffixes (.png added).
    """
    if folder is None:
        return [None] * len(items)
    from .embedding import IMAGE_SUFFIXES

    folder = Path(folder)
    inputs = {os.path.normcase(os.path.abspath(path)) for path, _ in items}
    used, targets = set(), []
    for path, error in items:
        if error is not None:
            targets.append(None)
            continue
        name = Path(path).name
        stem, suffix = os.path.splitext(name)
        if suffix.lower() in (".pgm", ".pbm"):
            suffix = ".ppm"
        elif suffix.lower() not in IMAGE_SUFFIXES:
            stem, suffix = name, ".png"
        n, target = 1, folder / f"{stem}{suffix}"
        while (os.path.normcase(str(target)).casefold() in used
               or os.path.normcase(os.path.abspath(target)) in inputs):
            n += 1
            target = folder / f"{stem}-{n}{suffix}"
        used.add(os.path.normcase(str(target)).casefold())
        targets.append(str(target))
    return targets


def _annotate(model, path, records, target, overwrite=False):
    """Draw every face's box and label on a copy of ``path`` written to ``target``.

    The copy is written under an unpredictable temporary name created exclusively
    and then linked to ``target`` only if nothing has that name (with
    ``overwrite``: renamed over an existing regular file), so a planted link is
    never written through and an existing file is not replaced unasked.

    Returns None, or the reason the copy could not be written.
    """
    import cv2
    from PIL import Image

    from ._utils import atomic_write
    from .embedding import IMAGE_FORMATS, ImageLoadError, load_image

    embedder = model.embedder_
    try:
        bgr = load_image(path, color=embedder.color, max_pixels=embedder.max_pixels)
    except ImageLoadError as exc:
        return f"cannot annotate: {exc.reason}"
    try:
        _draw(bgr, records)
    except (cv2.error, OverflowError, ValueError):
        return "cannot annotate: a face box lies outside the image"
    suffix = os.path.splitext(target)[1].lower()
    fmt = next((name for name, suffixes in IMAGE_FORMATS.items() if suffix in suffixes), "PNG")
    options = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}.get(fmt, {})
    if overwrite and os.path.lexists(target) and (os.path.islink(target)
                                                  or not os.path.isfile(target)):
        return (f"cannot write the annotated copy {target}: it is a link or special file, "
                "not replaced")
    try:
        atomic_write(target, lambda file: Image.fromarray(bgr[:, :, ::-1]).save(
            file, format=fmt, **options), overwrite=overwrite)
    except FileExistsError:
        return (f"cannot write the annotated copy {target}: it exists (pass --overwrite "
                "to replace it)")
    except OSError as exc:
        return f"cannot write the annotated copy {target}: {exc.strerror or exc}"
    return None


def _draw(bgr, records):
    """Draw each face's numbered box and label on ``bgr`` in place."""
    import cv2

    height, width = bgr.shape[:2]
    thick = max(1, round(min(height, width) / 300))
    scale = max(0.4, min(height, width) / 900)
    for number, face in enumerate(records, start=1):
        x1, y1, x2, y2 = (round(v) for v in face["box"])
        colour = {"female": (60, 60, 230), "male": (230, 120, 30)}.get(face["gender"], (0, 200, 0))
        cv2.rectangle(bgr, (x1, y1), (x2, y2), colour, thick, cv2.LINE_AA)
        label = f"{number}: {face['age']:.0f}" + (f" {face['gender']}" if face["gender"] else "")
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        top = y1 - th - base - 2 * thick if y1 - th - base - 2 * thick >= 0 else y1
        left = min(max(x1, 0), max(width - tw - 2 * thick, 0))
        cv2.rectangle(bgr, (left, top), (left + tw + 2 * thick, top + th + base + 2 * thick),
                      colour, -1)
        cv2.putText(bgr, label, (left + thick, top + th + thick), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (255, 255, 255), thick, cv2.LINE_AA)


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


def cmd_predict(args):
    from .embedding._io import frames_note

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
    from .model import has_intervals

    if args.coverage is not None and not has_intervals(model):
        _error("predict", f"warning: --coverage {args.coverage}: this model's age head gives "
                          "no age intervals, so none is printed")
    coverage = DEFAULT_COVERAGE if args.coverage is None else args.coverage
    cache = _FaceCache(args.cache, model.embedder_) if args.cache else None
    targets = _annotation_targets(items, args.annotate)
    records, failed, done = [], 0, 0
    show = sys.stderr.isatty() and not sys.stdout.isatty() and len(items) > 1
    n_jobs = _capped_jobs("predict", args.n_jobs, sum(error is None for _, error in items))
    stream = _predict_stream(model, items, targets, n_jobs=n_jobs, cache=cache,
                             coverage=coverage, overwrite=args.overwrite)
    try:
        for index, (path, faces, error) in enumerate(
                _progress(stream, len(items), "predict", show)):
            failed += error is not None
            record = {"path": path, "faces": faces, "error": error}
            if args.annotate and error is None:
                record["annotated"] = targets[index]
            note = frames_note(path) if error is None else None
            if note is not None:
                record["note"] = note
            with _no_interrupt():  # a result is written and counted, or neither
                if args.json:
                    records.append(record)
                elif args.jsonl:
                    _write(sys.stdout, _json(record) + "\n")
                else:
                    _write(sys.stdout, _plain_lines(path, faces) if faces or not error else "")
                    for message in (note, error):
                        if message is not None:
                            _error("predict", f"{path}: {message}")
                done += 1
    except KeyboardInterrupt:
        if args.json:
            _write(sys.stdout, _json(records) + "\n")
        _error("predict", f"interrupted: {done} of {len(items)} inputs done")
        return EXIT_INTERRUPTED
    finally:
        if cache is not None:
            cache.close()
    if args.json:
        _write(sys.stdout, _json(records) + "\n")
    return EXIT_SOME_FAILED if failed else EXIT_OK


# -- embed ---------------------------------------------------------------------

def cmd_embed(args):
    import numpy as np

    from ._utils import atomic_write
    from .embedding import ArcFaceEmbedder
    from .embedding._io import frames_note

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


# -- evaluate ------------------------------------------------------------------

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

    from .pretrained import MODELS

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


def cmd_evaluate(args):
    from .datasets import embed_dataset

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
    from .model import evaluate_model

    result, predictions = evaluate_model(model, features, data, return_predictions=True)
    result["seconds"] = round(time.perf_counter() - start, 2)
    result["dataset"] = args.dataset
    result["model"] = _model_description(args.model)
    result["skagegender_version"] = _version()
    if result.get("interval_coverage") is None:
        _error("evaluate", "warning: this model's age head gives no age intervals; interval "
                           "coverage and width are n/a")
    if args.report:
        from .metrics import write_evaluation_report

        page = write_evaluation_report(args.report, result, predictions)
        _error("evaluate", f"report -> {page}")
    if args.json:
        _print_json(_rounded(result))
        return 0
    from .metrics import evaluation_text

    _write(sys.stdout, evaluation_text(result))
    return 0


# -- train ---------------------------------------------------------------------

def _has_torch():
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _training_maps(args, data):
    """SFace maps of the training images (and copies) for the fine-tuned layer, or None.

    ``data`` is :func:`~skagegender.training.stack_training_data`'s. None (after an
    error message) when there are too few training faces. The maps are kept in
    ``--cache`` when given, else in a temporary folder. Rows whose face was found by
    the embedder but not for the maps (never expected) get NaN features, so nothing
    trains on them.
    """
    import tempfile

    import numpy as np

    from .training import frozen_maps, layer_training_rows

    n_train = len(layer_training_rows(data.X, data.age, data.groups, datasets=data.dataset,
                                      sample_weight=data.sample_weight))
    if n_train < LAYER_BATCH:
        _error("train", f"only {n_train} faces to train the fine-tuned layer on (80 % of the "
                        f"images; it needs at least {LAYER_BATCH}, its batch size). Train on "
                        "more images, or pass --shipped-layer to keep the shipped layer.")
        return None
    _error("train", f"computing SFace maps of {len(data.images)} images for the fine-tuned "
                    "layer" + (f" (kept in {args.cache})" if args.cache else ""))
    with tempfile.TemporaryDirectory(prefix="skagegender-maps-") as folder:
        maps, found = frozen_maps(f"train_{'+'.join(args.dataset)}", data.images,
                                  args.cache or folder, n_jobs=args.n_jobs or 1, verbose=False)
    data.X[~found] = np.nan
    return maps


#: Largest --params file (the JSON that `tune --json` prints is a few KiB).
MAX_PARAMS_BYTES = 1 << 20


def _params_file(path):
    """(target, Optuna trial params) of a ``tune --json`` output saved in ``path``."""
    import json

    from ._utils import NotRegularFileError, open_regular_file

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
    from .model_selection._storage import _ATTR_SEARCH, _import_optuna, _open_storage

    optuna = _import_optuna()
    try:
        study = optuna.load_study(study_name=name, storage=_open_storage(optuna, storage))
    except KeyError:
        names = optuna.get_all_study_names(storage=_open_storage(optuna, storage))
        raise ValueError(f"--study {storage}: no study named {name!r}; it has {names} "
                         "(choose one with --study-name)") from None
    estimator = str((study.user_attrs.get(_ATTR_SEARCH) or {}).get("estimator", ""))
    target = ("age" if estimator.startswith("AgeRegressor")
              else "gender" if estimator.startswith("GenderClassifier") else None)
    if target is None:
        raise ValueError(f"--study {storage}: the study {name!r} was not made by "
                         "'skagegender tune' (it searches no AgeRegressor or GenderClassifier)")
    try:
        best = study.best_trial
    except ValueError:
        raise ValueError(f"--study {storage}: the study {name!r} has no finished trial") from None
    return target, best.params


def _tuned_heads(args):
    """Heads built from --params files and --study studies: {"age"|"gender": head}."""
    if not args.params and not args.study:
        return {}
    found = [_params_file(path) for path in args.params or []]
    if args.study:
        dataset = "+".join(args.dataset)  # tune's names are of one dataset
        names = args.study_name or [f"{dataset}-age", f"{dataset}-gender"]
        from .model_selection._storage import _import_optuna, _open_storage

        optuna = _import_optuna()
        stored = set(optuna.get_all_study_names(storage=_open_storage(optuna, args.study)))
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

    from .heads import AgeRegressor, GenderClassifier
    from .model_selection import default_head_space

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
    from .training import TrainingSource, check_sources

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


def cmd_train(args):
    import numpy as np

    from .embedding import ArcFaceEmbedder
    from .heads import AgeRegressor, GenderClassifier
    from .model import AgeGenderModel
    from .training import (
        calibration_split,
        embed_training_data,
        repeated_rows,
        stack_training_data,
    )

    if args.shipped_layer and args.recipe != "default":
        _error("train", "--shipped-layer only applies to --recipe default")
        return EXIT_USAGE
    problem = output_file_problem(args.out)
    if problem is not None:
        _error("train", f"--out {args.out}: {problem}")
        return EXIT_USAGE
    if args.study_name and not args.study:
        _error("train", "--study-name needs --study STORAGE")
        return EXIT_USAGE
    if (args.params or args.study) and args.recipe is not None:
        _error("train", f"--recipe {args.recipe} fixes the heads: drop --params/--study")
        return EXIT_USAGE
    try:  # before the work: a bad file or study is told at once
        tuned = _tuned_heads(args)
    except ValueError as exc:
        _error("train", f"error: {exc}")
        return EXIT_USAGE
    clash = [f"--{target}-head" for target in tuned
             if getattr(args, f"{target}_head") != "mlp"]
    if clash:
        _error("train", f"{clash[0]} and the tuned {clash[0][2:-5]} parameters both choose "
                        "that head: drop one")
        return EXIT_USAGE
    try:  # before any work: every dataset named, found and weighed
        sources = _training_sources(args)
    except (ValueError, FileNotFoundError) as exc:
        _error("train", f"error: {exc}")
        return EXIT_USAGE
    if args.recipe is not None:
        from .training import make_recipe_embedder

        custom = [name for name, value, default in (
            ("--age-head", args.age_head, "mlp"), ("--gender-head", args.gender_head, "mlp"),
            ("--layers", args.layers, "age-gender"), ("--flip", args.flip, False))
            if value != default]
        if custom:
            _error("train", f"--recipe {args.recipe} fixes the features and heads: drop "
                            f"{', '.join(custom)}")
            return EXIT_USAGE
        if args.recipe == "default" and not args.shipped_layer and not _has_torch():
            _error("train", "--recipe default trains the fine-tuned SFace layer on your faces, "
                            'which needs torch: pip install "skagegender[train]". Or pass '
                            "--shipped-layer to keep the layer shipped with skagegender.")
            return EXIT_USAGE

        embedder = make_recipe_embedder(args.recipe, n_jobs=args.n_jobs)
    else:
        embedder = ArcFaceEmbedder(layers=None if args.layers == "none" else args.layers,
                                   flip_augment=args.flip, n_jobs=args.n_jobs)
    start = time.perf_counter()
    data = stack_training_data(embed_training_data(sources, embedder=embedder,
                                                   cache=args.cache))
    features = data.X
    embed_seconds = time.perf_counter() - start
    n_faces = int((~np.isnan(features).any(axis=1)).sum())
    if n_faces < FEW_FACES:
        _error("train", f"warning: only {n_faces} faces to learn from. A model trained on fewer "
                        f"than {FEW_FACES} faces will be poor: that leaves a few faces per year of "
                        "age for the heads to learn from. Train on more images (raise or drop "
                        "--limit).")
    gender = data.gender
    has_gender = known_labels(gender).any()
    layer = "shipped" if args.recipe != "default" or args.shipped_layer else "train"
    counts = data.counts
    if args.recipe is not None:
        from .training import fit_recipe

        maps = None
        if layer == "train":
            maps = _training_maps(args, data)
            if maps is None:
                return EXIT_USAGE
        model = fit_recipe(args.recipe, features, data.age, gender if has_gender else None,
                           groups=data.groups, datasets=data.dataset,
                           sample_weight=data.sample_weight, embedder=embedder, maps=maps,
                           layer=layer)
        if args.recipe == "default":  # the split fit_recipe made, per dataset
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
    else:
        every = repeated_rows(data.sample_weight)
        model = AgeGenderModel(
            embedder, age_head=tuned.get("age", AgeRegressor(head=args.age_head)),
            gender_head=tuned.get("gender", GenderClassifier(head=args.gender_head)))
        model.fit_features(features[every], data.age[every],
                           gender[every] if has_gender else None)
    extra = {"finetuned_layer": "trained" if layer == "train" else "shipped"}
    path = model.save(args.out, extra_meta={"trained_on": "+".join(args.dataset),
                                            "datasets": counts,
                                            "recipe": args.recipe or "custom",
                                            **(extra if args.recipe == "default" else {}),
                                            "n_train": int(np.isfinite(features[:, 0]).sum())})
    summary = {"out": str(path), "dataset": "+".join(args.dataset),
               "datasets": [{k: c[k] for k in ("name", "weight", "n_images", "n_faces",
                                               "n_degraded")} for c in counts],
               "n_images": sum(c["n_images"] for c in counts),
               "n_faces_found": n_faces,
               "embed_seconds": round(embed_seconds, 1),
               "fit_seconds": round(time.perf_counter() - start - embed_seconds, 1)}
    if args.json:
        _print_json(summary)
    else:
        print(f"trained on {summary['n_faces_found']} faces of {summary['n_images']} images "
              f"-> {path}")
    return 0


# -- parser --------------------------------------------------------------------

class _HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions and option help; keeps the exit-code table as written."""

    def _fill_text(self, text, width, indent):
        if text.startswith("exit codes:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _exit_codes(zero, one, two):
    """The epilog of a sub-command's --help: its exit codes."""
    return (f"exit codes:\n  0    {zero}\n  1    {one}\n  2    {two}\n"
            "  130  interrupted (Ctrl-C)")


_PER_INPUT_CODES = (
    ("success; an image in which no face is found is a success\n"
     "       (reported with no faces)"),
    "some inputs could not be read; the others are still reported",
    ("usage error (e.g. a model file that is missing or rejected), or\n"
     "       nothing to do (e.g. only empty folders)"),
)
_COMMAND_CODES = (
    "success",
    "the command failed; the reason is on stderr",
    ("usage error (e.g. a missing dataset folder, a model file that is\n"
     "       missing or rejected)"),
)


def build_parser():
    """The ``skagegender`` argument parser with its sub-commands."""
    from ._tune_cli import add_tune_arguments, run_tune
    from .datasets import DATASETS
    from .embedding import IMAGE_SUFFIXES
    from .heads import HEAD_FAMILIES

    parser = argparse.ArgumentParser(
        prog="skagegender", description="Age and gender estimation from face photos.",
        formatter_class=_HelpFormatter, epilog=_exit_codes(*_PER_INPUT_CODES))
    parser.add_argument("--version", action="version", version=f"skagegender {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, summary, codes, description=None):
        return sub.add_parser(name, help=summary, formatter_class=_HelpFormatter,
                              description=description or summary[0].upper() + summary[1:],
                              epilog=_exit_codes(*codes))

    suffixes = " ".join(sorted(IMAGE_SUFFIXES))
    shared = {
        "paths": {"nargs": "*", "help": f"image files or folders; folders are searched "
                  f"recursively for {suffixes} files (others are counted and reported on "
                  "stderr); a file named here is always tried"},
        "--files-from": {"metavar": "FILE", "help": "also read the paths listed in FILE, one "
                         "per line ('-' for standard input), after those named on the command "
                         "line; for more paths than a command line holds (default: none)"},
        "--model": {"help": "a shipped model, 'default' or 'fast' (YuNet and two small "
                    "dlib networks, no SFace: several times faster, less accurate), or a "
                    "model file written by 'skagegender train' (./fast for a file named "
                    "fast) (default: the shipped default model)"},
        "--dataset": {"required": True, "choices": DATASETS,
                      "help": "the dataset's format (required)"},
        "--root": {"required": True, "help": "the dataset's folder (required)"},
        "--flip": {"action": "store_true", "help": "average each face's features with its "
                   "mirror image, 2x the cost (default: off)"},
        "--cache": {"metavar": "DIR", "help": "embedding cache folder; a rerun re-uses finished "
                    "images (default: no cache)"},
        "--n-jobs": {"type": _positive_or_all, "default": None, "metavar": "N",
                     "help": "worker processes, -1 for all cores (default: one process)"},
        "--limit": {"type": int, "help": "use a seeded random subset of this many images "
                    "(default: all)"},
        "--json": {"action": "store_true", "help": "print the summary as JSON on stdout "
                   "(default: off, one text line)"},
    }

    def add(p, name, **changes):
        p.add_argument(name, **{**shared[name], **changes})

    p = command("predict", "age and gender of every face in images", _PER_INPUT_CODES,
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
                "reported). An image "
                "without a face prints 'PATH: no face found'.")
    add(p, "paths")
    add(p, "--files-from")
    add(p, "--model")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--jsonl", action="store_true",
                      help="write one JSON object {path, faces, error} per input, one line each, "
                      "as soon as that input is done (after Ctrl-C the finished lines stay) "
                      "(default: off, plain text lines)")
    add(form, "--json", help="write one JSON array of those objects when all inputs are done; "
        "for small calls (default: off, plain text lines)")
    p.add_argument("--annotate", metavar="DIR",
                   help="write into DIR a copy of each photo with every face's box and label "
                   "'number: age gender', same size and format as the photo (same-named photos "
                   "get -2, -3 ... suffixes) (default: no copies)")
    p.add_argument("--overwrite", action="store_true",
                   help="with --annotate, replace existing files of the same names in DIR "
                   "(links and special files are never replaced) (default: off, such an "
                   "input is reported as not annotated)")
    add(p, "--n-jobs", help=f"worker processes, -1 for all cores; inputs go to the workers "
        f"{PREDICT_CHUNK} at a time and results still come in input order (default: one process)")
    add(p, "--cache", help="embedding cache folder: the faces of every finished image are kept "
        "there, so a rerun (e.g. after Ctrl-C) only computes the others (default: no cache)")
    p.add_argument("--coverage", type=_coverage, default=None,
                   help="probability that the printed age interval holds the true age, "
                   "between 0 and 1; with a model whose age head gives no intervals (the "
                   f"shipped 'fast') a warning says so (default: {DEFAULT_COVERAGE})")
    p.set_defaults(func=cmd_predict)

    p = command("embed", "face features of images to an .npz file", _PER_INPUT_CODES,
                "Face features of images to an .npz file: one row per input (NaN where no face "
                "was embedded). Inputs that could not be read or have no face are named on "
                "stderr with the reason.")
    add(p, "paths")
    add(p, "--files-from")
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
    for name in ("--flip", "--cache", "--n-jobs", "--json"):
        add(p, name)
    p.set_defaults(func=cmd_embed)

    p = command("evaluate", "score a model on a labeled dataset", _COMMAND_CODES,
                "Score a model on a labeled dataset: MAE, one-class-off, CS@5 and gender "
                "accuracy, overall and per age group (and gender, race). Images whose face is "
                "not found count as errors (the median training age, gender wrong).")
    for name in ("--dataset", "--root", "--model", "--limit", "--cache", "--n-jobs"):
        add(p, name)
    add(p, "--json", help="print the scores as JSON on stdout, with the model (name or path and "
        "sha256) and skagegender version, floats to 4 decimals (default: off, a table)")
    p.add_argument("--report", metavar="DIR",
                   help="also write DIR/index.html, one self-contained page with the table "
                   "and plots: predicted against true age, error and interval coverage per "
                   "age group, gender reliability (needs matplotlib: pip install "
                   "\"skagegender[plot]\") (default: no page)")
    p.set_defaults(func=cmd_evaluate)

    heads = list(HEAD_FAMILIES)
    p = command("train", "fit age and gender heads and save a model file", _COMMAND_CODES,
                "Fit age and gender heads on one or more labeled datasets and save a model "
                "file. Several datasets: repeat --dataset NAME --root DIR, one pair each, "
                "optionally with one --weight each in the same order, e.g. '--dataset "
                "utkface --root UTKFace --dataset fgnet --root FGNET --weight 1 --weight 10' "
                "(FG-NET images count ten times). The pairs are checked before any work. "
                f"Warns on stderr when fewer than {FEW_FACES} faces are found: such a model "
                "is poor.")
    add(p, "--dataset", action="append",
        help="the dataset's format; repeat for several datasets (required)")
    add(p, "--root", action="append",
        help="the dataset's folder, one per --dataset in the same order (required)")
    p.add_argument("--weight", type=_whole_number, action="append", metavar="N",
                   help="how many times each image of the dataset counts (0: not trained "
                   "on), one per --dataset in the same order: the heads see its rows N "
                   "times, the age gate and the fine-tuned layer of --recipe default weigh "
                   "them N (default: 1 each)")
    p.add_argument("--degraded-copies", type=_share, default=0.0, metavar="FRACTION",
                   help="also train on degraded copies (smaller, blurred, recompressed, "
                   "recoloured: as old or poor photos look) of this share, 0 to 1, of each "
                   "dataset's images, seeded; a copy stays on its original's side of the "
                   "calibration split (default: 0, none)")
    p.add_argument("--out", required=True, help="model file to write (required)")
    p.add_argument("--recipe", choices=("default", "fast"), default=None,
                   help="train a shipped model's recipe on this dataset: 'default' (the "
                   "shipped features, an age gate over the fine-tuned SFace layer and the "
                   "dlib age network, calibrated on 20%% of each dataset's images, held out "
                   "by subject where it has subject ids (FG-NET, Adience, MORPH, IMDB-WIKI)) "
                   "or 'fast' (the fast model's features and heads: its age is the dlib age "
                   "network's expected age as is, learned from none of these images; only the "
                   "gender head is trained); --age-head, "
                   "--gender-head, --layers and --flip then do not apply. 'default' also "
                   "trains the fine-tuned SFace layer on 80%% of the images (needs torch: "
                   "pip install \"skagegender[train]\"; at least 128 faces), stored in the "
                   "model file")
    p.add_argument("--shipped-layer", action="store_true",
                   help="with --recipe default: keep the fine-tuned SFace layer shipped with "
                   "skagegender instead of training one (no torch needed) (default: off)")
    p.add_argument("--age-head", default="mlp", choices=heads,
                   help="the age head's family (default: %(default)s)")
    p.add_argument("--gender-head", default="mlp", choices=heads,
                   help="the gender head's family (default: %(default)s)")
    p.add_argument("--layers", default="age-gender",
                   help="feature blocks: 'age-gender', 'age-gender-dlib', 'age-gender-finetuned' "
                   "or 'none' for the identity embedding only (default: %(default)s)")
    p.add_argument("--params", metavar="FILE", action="append",
                   help="use the best head found by 'skagegender tune': FILE is what "
                   "'tune --json' printed (its target says which head); give it once per "
                   "head (default: --age-head/--gender-head with their default settings)")
    p.add_argument("--study", metavar="STORAGE",
                   help="use the best trials of 'skagegender tune' studies in this Optuna "
                   "storage (e.g. sqlite:///tune.db): the studies DATASET-age and "
                   "DATASET-gender, tune's default names, where present (default: none)")
    p.add_argument("--study-name", metavar="NAME", action="append",
                   help="with --study: read this study instead (repeat for the other head) "
                   "(default: tune's default names)")
    for name in ("--flip", "--cache", "--n-jobs", "--json"):
        add(p, name)
    add(p, "--limit", help="use a seeded random subset of this many images of each dataset "
        "(default: all)")
    p.set_defaults(func=cmd_train)

    p = command("tune", "Optuna search over heads (needs skagegender[optuna])", _COMMAND_CODES,
                "Optuna search over heads (needs skagegender[optuna]). Train a model with the "
                "best head found: 'skagegender train ... --study STORAGE' (the study names "
                "this command uses by default) or save '--json' output to a file and pass "
                "'train --params FILE'.")
    add_tune_arguments(p)
    p.set_defaults(func=run_tune)
    return parser


def main(argv=None):
    """Run the ``skagegender`` command; returns its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "paths", None) == [] and args.files_from is None:
        parser.error(f"{args.command}: give image files or folders, or --files-from FILE "
                     "('-' for standard input)")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _error(args.command, "interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader left (e.g. `| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_SOME_FAILED
    except (FileNotFoundError, ValueError, ImportError) as exc:
        from .model import ModelFileError

        _error(args.command, f"error: {exc}")
        usage = isinstance(exc, (FileNotFoundError, ModelFileError)) or getattr(
            exc, "usage", False) is True
        return EXIT_USAGE if usage else EXIT_SOME_FAILED


if __name__ == "__main__":
    sys.exit(main())
