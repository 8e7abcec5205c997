"""Start-up of ``skagegender predict one.jpg``: seconds before the first image, by stage.

    python benchmarks/startup.py                      # 5 runs of the default model
    python benchmarks/startup.py --runs 9 --model default --model fast
    python benchmarks/startup.py --model default --runtime onnxruntime --runtime openvino

Each run is a fresh ``python`` process that runs the real command line
(``skagegender.cli.main()`` with the arguments ``predict IMAGE --model MODEL``, as
the ``skagegender`` console script calls it) with a clock on
its stages; the parent notes the time just before it starts the process and the
child's CPU time from ``getrusage``. The stages:

- ``interpreter``: process start until the child's first line (Python, site);
- ``import``: ``import skagegender.cli``;
- ``parser``: building the argument parser and parsing (what ``main`` does first);
  the parser names the embedding, heads and datasets subpackages, so this is where
  scikit-learn (with scipy, pandas, joblib) is imported;
- ``load_model``: from the first open of the model file to the first open of the
  image (reading the model, building its networks, importing the image reader);
- ``first_image``: from then until the first image's result is written;
- ``exit``: from then until the process has exited.

``before_first_image`` is the sum of the first four: what the start-up target
(issue 15: at most 1.5 s on a warm disk) counts. One warm-up run (not counted)
warms the disk cache and the converted-model cache. Each number in the summary
is the minimum over the runs (the machine may be shared; the minimum is the
least disturbed), wall and CPU (user + system) seconds; the median is given too.
CPU can exceed wall: the BLAS libraries of numpy and scipy start worker threads
that spin on another core for a while.
The modules of the heavy dependencies loaded by the end of each stage are listed,
and one more run under ``python -X importtime`` splits the import time by top-level
package (``-X importtime`` slows imports down a little; the split is what counts).
``--runtime`` (repeatable) runs each model with each engine
(``$SKAGEGENDER_RUNTIME`` set for the child); without it the child inherits this
process's environment. Writes ``startup.json`` and ``startup.md`` into ``--out``
(default ``benchmarks/results``).
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "FGNET" / "images" / "001A02.JPG"
STAGES = ("interpreter", "import", "parser", "load_model", "first_image", "exit")
BEFORE_FIRST_IMAGE = ("interpreter", "import", "parser", "load_model")
HEAVY = ("cv2", "joblib", "lightgbm", "onnx", "onnxruntime", "openvino", "optuna", "pandas",
         "PIL", "scipy", "skops", "sklearn", "torch", "tqdm")

#: What each fresh process runs: the real command line, with marks at its stages. The
#: stages are seen from outside the package: Python's audit events say when the model
#: file and the image are first opened, a wrapper of stdout when the first result is
#: written (the hook costs a few milliseconds over all the imports).
CHILD = r"""
import json, os, resource, sys, time

marks = {}
heavy = os.environ["STARTUP_HEAVY"].split(",")
model_file, image = os.environ["STARTUP_MODEL_FILE"], os.environ["STARTUP_IMAGE"]

def mark(name):
    if name not in marks:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        loaded = sorted(m for m in heavy if m in sys.modules)
        marks[name] = (time.time(), usage.ru_utime + usage.ru_stime, loaded)

def audit(event, args):
    if event != "open" or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path = os.path.abspath(os.fsdecode(args[0]))
    if path == model_file:
        mark("load_start")
    elif path == image and "load_start" in marks:
        mark("load_end")

class FirstWrite:
    def __init__(self, stream):
        self.stream = stream
    def write(self, text):
        mark("first_output")
        return self.stream.write(text)
    def __getattr__(self, name):
        return getattr(self.stream, name)

sys.addaudithook(audit)
mark("child_start")
import skagegender.cli as cli
mark("imported")
sys.stdout = FirstWrite(sys.stdout)
sys.argv[0] = "skagegender"
code = cli.main()  # as the console script calls it
sys.stdout.flush()
with open(os.environ["STARTUP_MARKS"], "w") as f:
    json.dump(marks, f)
sys.exit(code)
"""


def model_path(model):
    """The file ``--model`` names: a shipped model's, or the path given."""
    from skagegender.pretrained import MODELS

    return os.path.abspath(MODELS.get(model, model))


def child_env(env, image, model, marks_file):
    return {**env, "STARTUP_MARKS": str(marks_file), "STARTUP_HEAVY": ",".join(HEAVY),
            "STARTUP_MODEL_FILE": model_path(model), "STARTUP_IMAGE": os.path.abspath(image)}


def one_run(image, model, env):
    """One fresh process: seconds (wall, CPU) per stage, and its stdout."""
    with tempfile.TemporaryDirectory() as tmp:
        marks_file = Path(tmp) / "marks.json"
        env = child_env(env, image, model, marks_file)
        # -P: the child imports the skagegender this script imports (an installed one), not
        # a source tree in the working folder
        command = [sys.executable, "-P", "-c", CHILD, "predict", str(image), "--model", model]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.time()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        end = time.time()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0 or not marks_file.is_file():
            raise RuntimeError(f"skagegender predict failed ({done.returncode}): "
                               f"{done.stderr[-2000:]}")
        marks = json.loads(marks_file.read_text())
    missing = {"load_start", "load_end", "first_output"} - set(marks)
    if missing:
        raise RuntimeError(f"no mark {sorted(missing)}: the model file or the image was not "
                           "opened as expected")
    cpu_total = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    points = [("start", start, 0.0)]
    for name in ("child_start", "imported", "load_start", "load_end", "first_output"):
        points.append((name, marks[name][0], marks[name][1]))
    points.append(("end", end, cpu_total))
    wall = {stage: b[1] - a[1] for stage, a, b in zip(STAGES, points, points[1:])}
    cpu = {stage: b[2] - a[2] for stage, a, b in zip(STAGES, points, points[1:])}
    for values in (wall, cpu):
        values["before_first_image"] = sum(values[s] for s in BEFORE_FIRST_IMAGE)
        values["total"] = sum(values[s] for s in STAGES)
    stdout = done.stdout.strip().replace(str(image), Path(image).name)  # no machine path
    return {"wall": wall, "cpu": cpu, "stdout": stdout,
            "loaded": {name: marks[name][2] for name in ("imported", "load_start", "load_end")}}


def import_seconds(image, model, env):
    """Seconds of import (self time) per top-level package, from one ``-X importtime`` run."""
    with tempfile.TemporaryDirectory() as tmp:
        env = child_env(env, image, model, Path(tmp) / "marks.json")
        done = subprocess.run([sys.executable, "-P", "-X", "importtime", "-c", CHILD, "predict",
                               str(image), "--model", model], env=env, capture_output=True,
                              text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"skagegender predict failed ({done.returncode}): {done.stderr[-2000:]}")
    totals = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = line[len("import time:"):].split("|", 2)
        package = name.strip().split(".")[0]
        totals[package] = totals.get(package, 0.0) + int(self_us) / 1e6
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def summarise(runs):
    keys = (*STAGES, "before_first_image", "total")
    return {kind: {"min": {k: min(r[kind][k] for r in runs) for k in keys},
                   "median": {k: statistics.median(r[kind][k] for r in runs) for k in keys}}
            for kind in ("wall", "cpu")}


def markdown(report):
    lines = ["# Start-up of `skagegender predict one.jpg`", "",
             f"Command: `{report['command']}`", "",
             (f"{report['runs']} fresh processes per model after {report['warmup']} warm-up "
             f"run(s); image `{report['image']}`; Python {report['python']}; "
             f"load average {report['load_average']:.2f} at the start; bytecode cache "
             f"{'on' if report['bytecode_cache'] else 'off (PYTHONDONTWRITEBYTECODE)'}. "
             "Seconds, the minimum "
             "over the runs (median in brackets); CPU is user + system time of the process."),
             ""]
    for key, result in report["models"].items():
        summary = result["summary"]
        model = key.split(", ")[0]
        lines += [f"## `--model {model}`, runtime {result.get('runtime', 'auto')}", "",
                  "| stage | wall s | CPU s |", "|---|---:|---:|"]
        for stage in (*STAGES, "before_first_image", "total"):
            cells = [f"{summary[kind]['min'][stage]:.3f} ({summary[kind]['median'][stage]:.3f})"
                     for kind in ("wall", "cpu")]
            name = f"**{stage}**" if stage == "before_first_image" else stage
            lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
        loaded = result["runs"][0]["loaded"]
        lines += ["", "Heavy modules loaded:", "",
                  f"- after `import skagegender.cli`: {', '.join(loaded['imported']) or 'none'}",
                  f"- after the parser: {', '.join(loaded['load_start']) or 'none'}",
                  f"- after loading the model: {', '.join(loaded['load_end']) or 'none'}", ""]
        imports = result["import_seconds_by_package"]
        lines += [f"Import time by top-level package (one `-X importtime` run, "
                  f"{sum(imports.values()):.3f} s in all): "
                  + ", ".join(f"{name} {seconds:.3f}" for name, seconds in
                              list(imports.items())[:10]) + ".", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default=str(DEFAULT_IMAGE), help="the one image")
    parser.add_argument("--model", action="append", dest="models",
                        help="shipped model name or file, repeatable (default: default)")
    parser.add_argument("--runtime", action="append", dest="runtimes",
                        choices=("onnxruntime", "openvino", "auto"),
                        help="engine for the networks, repeatable (default: the environment's)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be at least 1 and --warmup at least 0")
    image = Path(args.image)
    if not image.is_file():
        parser.error(f"--image {image} is not a file")
    env = dict(os.environ)
    report = {"command": f"skagegender predict {image.name} --model MODEL",
              "image": image.name, "runs": args.runs, "warmup": args.warmup,
              "python": platform.python_version(), "load_average": os.getloadavg()[0],
              "skagegender_home": "set" if env.get("SKAGEGENDER_HOME") else "default",
              # Without .pyc files every start compiles skagegender's modules (~0.03 s).
              "bytecode_cache": not env.get("PYTHONDONTWRITEBYTECODE"),
              "models": {}}
    for model, runtime in [(m, r) for m in args.models or ["default"]
                           for r in args.runtimes or [None]]:
        key = model if runtime is None else f"{model}, {runtime}"
        run_env = env if runtime is None else {**env, "SKAGEGENDER_RUNTIME": runtime}
        for _ in range(args.warmup):
            one_run(image, model, run_env)
        runs = [one_run(image, model, run_env) for _ in range(args.runs)]
        report["models"][key] = {"summary": summarise(runs), "runs": runs,
                                 "runtime": runtime or env.get("SKAGEGENDER_RUNTIME", "auto"),
                                 "import_seconds_by_package": import_seconds(image, model,
                                                                             run_env)}
        best = report["models"][key]["summary"]
        print(f"{key}: before the first image {best['wall']['min']['before_first_image']:.3f} s "
              f"wall, {best['cpu']['min']['before_first_image']:.3f} s CPU (min of {args.runs})",
              flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "startup.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "startup.md").write_text(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
