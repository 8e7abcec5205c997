"""What the commands share: exit codes, argument types, input lists, output and errors.

Exit codes: 0 success (an image without a face is a success); 1 when some inputs
could not be read (the others are still reported); 2 for usage errors and when
there is nothing to do (e.g. only empty folders); 130 after Ctrl-C.
"""

import argparse
import json
import math
import os
import signal
import sys
import threading
import unicodedata
from collections import Counter
from contextlib import contextmanager, nullcontext
from pathlib import Path

from .._utils import capped_n_jobs, check_coverage

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EMPTY_FOLDER = "no image files in this folder"
#: Longest line of a ``--files-from`` list.
MAX_LIST_LINE = 65536


def _version():
    from .. import __version__

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
    from ..embedding import IMAGE_SUFFIXES

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
        from ..embedding import IMAGE_SUFFIXES

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
    from ..pretrained import MODELS, model_file

    if model is None or model in MODELS:
        return model_file(model or "default")
    return Path(model)


def _load_model(model):
    from ..model import AgeGenderModel

    return AgeGenderModel.load(_model_path(model))


def _json(obj, *, indent=None):
    return json.dumps(obj, indent=indent, allow_nan=False)


def _print_json(obj):
    _write(sys.stdout, _json(obj, indent=2) + "\n")


# -- argument types ------------------------------------------------------------

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


def _coverage(text):
    """argparse type of --coverage: a number strictly between 0 and 1 (``check_coverage``)."""
    try:
        value = float(text)
    except ValueError:
        value = text  # refused below, named as given
    try:
        return check_coverage(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None



def _positive(kind, minimum=None):
    """An argparse type: a ``kind`` number above 0, or at least ``minimum``."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        ok = value > 0 if minimum is None else value >= minimum  # NaN is neither
        if not ok or not math.isfinite(value):
            bound = "above 0" if minimum is None else f"at least {minimum}"
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


# -- the parser ------------------------------------------------------------------

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



def add_command(sub, name, summary, codes, description=None):
    """A sub-command's parser on ``sub``, with its exit codes as the --help epilog."""
    return sub.add_parser(name, help=summary, formatter_class=_HelpFormatter,
                          description=description or summary[0].upper() + summary[1:],
                          epilog=_exit_codes(*codes))


def _shared_arguments():
    from ..datasets import DATASETS
    from ..embedding import IMAGE_SUFFIXES

    suffixes = " ".join(sorted(IMAGE_SUFFIXES))
    return {
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


def add_shared(parser, *names, **changes):
    """Add the options ``names`` that several commands share, each updated by ``changes``."""
    shared = _shared_arguments()
    for name in names:
        parser.add_argument(name, **{**shared[name], **changes})
