"""What each depth of fine-tuning SFace buys, in each domain, on one fixed split.

    python benchmarks/finetune_depth.py --work DIR --depths layer            # first
    python benchmarks/finetune_depth.py --work DIR --depths whole last-stage more

One fixed split (no cross-validation; deep training in every fold costs too much on
2 cores): UTKFace from ``--data`` (sorted file names, a permutation seeded by
``--seed``): the first ``--n-train`` faces train, the next ``--n-test`` are held out.
Held-out domains: those UTKFace faces; degraded copies of them (``degrade_photo``,
seeded per face, applied to the photo before alignment); every FG-NET image in
``--data`` (never trained on: an unseen domain; the per-subject MAE spread is
reported). Faces are aligned once (``aligned_crops``) and kept in ``--work``
(outside the repository), with the frozen outputs, checkpoints and exported networks.

Each depth (``train_deep``): ``layer`` trains SFace's embedding layer and the new
outputs from SFace's weights; ``last-stage``, ``more`` and ``whole`` start from the
``layer`` network and train deeper. Training views: flips, small shift / scale /
rotation, ``degrade_photo`` and grayscale, a fresh seeded view of each face each
epoch, the same for every depth. Each trained network is exported to ONNX and
checked against torch on held-out faces (max abs difference), then scored with
onnxruntime: MAE, one-class-off, CS@5, gender accuracy, MAE per age group. A killed
run started again continues from its checkpoints. Writes ``finetune_depth.json``
and ``finetune_depth.md`` into ``--out`` (default ``benchmarks/results``) from every
depth finished so far in ``--work``.
"""

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: Runs: the layer from SFace's weights, then each depth (and the layer alone, as the
#: control) trained on from it.
RUNS = {"layer": "layer", "layer-continued": "layer", "last-stage": "last-stage",
        "more": "more", "whole": "whole"}
ORDER = tuple(RUNS)
DOMAINS = ("utkface", "utkface-degraded", "fgnet")


def load_split(data, n_train, n_test, seed):
    """Paths, ages and genders of the fixed split, and FG-NET's paths, ages and subjects."""
    from skagegender.datasets import load_dataset

    utk = load_dataset("utkface", Path(data) / "UTKFace")
    order = np.random.default_rng(seed).permutation(len(utk.paths))
    if n_train + n_test > len(order):
        raise SystemExit(f"{len(order)} UTKFace faces: fewer than {n_train} + {n_test}")
    paths = [str(utk.paths[i]) for i in order[:n_train + n_test]]
    age = np.asarray(utk.age, float)[order[:n_train + n_test]]
    female = np.array([utk.gender[i] == "female" for i in order[:n_train + n_test]], float)
    fgnet = load_dataset("fgnet", Path(data) / "FGNET")
    return (paths, age, female,
            ([str(p) for p in fgnet.paths], np.asarray(fgnet.age, float), list(fgnet.subject)))


def scores(probs, age, female=None, subject=None):
    """Age and gender scores of (n, 102) network outputs."""
    from skagegender.metrics import evaluation_report

    pred = probs[:, :101] @ np.arange(101)
    gender_true = gender_pred = None
    if female is not None:
        gender_true = np.where(female > 0.5, "female", "male")
        gender_pred = np.where(probs[:, 101] > 0.5, "female", "male")
    report = evaluation_report(age, pred, gender_true=gender_true, gender_pred=gender_pred)
    out = {key: report[key] for key in ("n", "mae", "one_class_off", "cs5", "gender_accuracy")}
    out["mae_per_age_group"] = {group: values["mae"]
                                for group, values in report["per_group"]["age"].items()}
    if subject is not None:
        subject = np.asarray(subject)
        per = {s: float(np.abs(pred[subject == s] - age[subject == s]).mean())
               for s in sorted(set(subject))}
        values = np.array(list(per.values()))
        out["per_subject_mae"] = per
        out["subject_mae_spread"] = {"min": float(values.min()),
                                     "median": float(np.median(values)),
                                     "max": float(values.max()), "std": float(values.std())}
    return out


def onnx_ms_per_face(path, crops, *, repeats=3):
    """CPU ms a face of an exported network in onnxruntime, one thread, batch 8."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    blob = np.ascontiguousarray(crops[:8].transpose(0, 3, 1, 2), dtype=np.float32)
    session.run(None, {"data": blob})
    best = np.inf
    for _ in range(repeats):
        start = time.process_time()
        session.run(None, {"data": blob})
        best = min(best, time.process_time() - start)
    return 1000 * best / len(blob)


def run_onnx(path, crops, batch=64):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    parts = [session.run(["probs"], {"data": np.ascontiguousarray(
        crops[i:i + batch].transpose(0, 3, 1, 2), dtype=np.float32)})[0]
        for i in range(0, len(crops), batch)]
    return np.concatenate(parts)


#: Options whose values are paths of this machine: the recorded command names them
#: by a placeholder (the results are committed; the paths are not the reader's).
PATH_OPTIONS = {"--data": "DATA", "--work": "WORK", "--out": "OUT"}


def shown_command(argv):
    """The command line as the results record it: path options' values replaced."""
    shown, hide = [], None
    for arg in argv:
        option, eq, _ = arg.partition("=")
        if hide is not None:
            shown.append(hide)
            hide = None
        elif eq and option in PATH_OPTIONS:
            shown.append(f"{option}={PATH_OPTIONS[option]}")
        else:
            shown.append(arg)
            hide = PATH_OPTIONS.get(arg)
    return "python benchmarks/finetune_depth.py " + " ".join(shown)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--work", required=True,
                        help="folder outside the repository for crops, caches, checkpoints")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--name", default="finetune_depth")
    parser.add_argument("--depths", nargs="+", default=list(ORDER), choices=ORDER)
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--layer-epochs", type=int, default=3,
                        help="epochs of the layer trained from SFace's weights")
    parser.add_argument("--epochs", type=int, default=1,
                        help="epochs of each run that starts from the layer")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fgnet-limit", type=int, default=None,
                        help="only the first N FG-NET images (smoke tests)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop each depth after this many steps (resume later)")
    args = parser.parse_args(argv)

    import torch

    from skagegender.training import aligned_crops, train_deep

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    paths, age, female, (fg_paths, fg_age, fg_subject) = load_split(
        args.data, args.n_train, args.n_test, args.seed)
    if args.fgnet_limit is not None:
        fg_paths, fg_age = fg_paths[:args.fgnet_limit], fg_age[:args.fgnet_limit]
        fg_subject = fg_subject[:args.fgnet_limit]
    key = hashlib.sha256(repr((paths, args.seed)).encode()).hexdigest()[:12]
    start = time.perf_counter()
    crops, found = aligned_crops(f"utkface-{key}", paths, work / "crops", n_jobs=args.n_jobs)
    test_paths = paths[args.n_train:]
    degraded, deg_found = aligned_crops(
        f"utkface-degraded-{key}", [(p, args.seed * 100003 + i) for i, p in enumerate(test_paths)],
        work / "crops", n_jobs=args.n_jobs)
    fg_crops, fg_found = aligned_crops(f"fgnet-{len(fg_paths)}", fg_paths, work / "crops", n_jobs=args.n_jobs)
    align_seconds = time.perf_counter() - start
    train_rows = np.flatnonzero(found[:args.n_train])
    test = args.n_train + np.flatnonzero(found[args.n_train:])
    domains = {
        "utkface": (crops[test], age[test], female[test], None),
        "utkface-degraded": (degraded[deg_found], age[args.n_train:][deg_found],
                             female[args.n_train:][deg_found], None),
        "fgnet": (fg_crops[fg_found], fg_age[fg_found], None,
                  list(np.asarray(fg_subject)[fg_found])),
    }
    label_age = np.clip(age, 0, 100)

    def train(run, epochs, init=None, offset=0):
        return train_deep(
            crops, label_age, female, train_rows, depth=RUNS[run], init=init, epochs=epochs,
            view_offset=offset, batch_size=args.batch_size, random_state=args.seed,
            cache_folder=work / "frozen", checkpoint_folder=work / "runs" / run,
            stop_after_steps=args.max_steps, n_jobs=args.n_jobs, verbose=True)

    layer = train("layer", args.layer_epochs)
    if not layer.finished:
        print(f"layer: stopped after {layer.step} steps; run again to continue", flush=True)
        return
    for run in [r for r in ORDER if r in args.depths]:
        model = layer if run == "layer" else train(run, args.epochs, layer, args.layer_epochs)
        if not model.finished:
            print(f"{run}: stopped after {model.step} steps; run again to continue", flush=True)
            continue
        onnx_path = model.export_onnx(work / "models" / f"{run}.onnx")
        check = crops[test[:32]]
        diff = float(np.abs(run_onnx(onnx_path, check) - model.predict(check)).max())
        result = {"run": run, "depth": RUNS[run],
                  "epochs": args.layer_epochs if run == "layer" else args.epochs,
                  "starts_from": None if run == "layer" else "layer",
                  "steps": model.step, "train_seconds": model.train_seconds,
                  "frozen_output_seconds": model.cache_seconds,
                  "onnx_vs_torch_max_abs_diff": diff,
                  "onnx_cpu_ms_per_face": onnx_ms_per_face(onnx_path, check),
                  "command": shown_command(sys.argv[1:] if argv is None else argv),
                  "finished_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                  "domains": {}}
        for name, (x, y, g, subject) in domains.items():
            result["domains"][name] = scores(run_onnx(onnx_path, x), y, g, subject)
        if run != "layer":
            result["train_seconds_with_layer"] = model.train_seconds + layer.train_seconds
        (work / "results").mkdir(parents=True, exist_ok=True)
        (work / "results" / f"{run}.json").write_text(json.dumps(result, indent=1))
        print(json.dumps({k: v for k, v in result.items() if k != "domains"}), flush=True)
        for name, values in result["domains"].items():
            print(f"  {run:15s} {name:17s} MAE {values['mae']:.2f} 1-off "
                  f"{values['one_class_off']:.3f} CS@5 {values['cs5']:.3f} gender "
                  f"{values['gender_accuracy']}", flush=True)

    setup = {
        "command": shown_command(sys.argv[1:] if argv is None else argv),
        "split": {"n_train_faces": len(train_rows), "n_test_faces": len(test),
                  "n_degraded_faces": int(deg_found.sum()), "n_fgnet_images": int(fg_found.sum()),
                  "n_fgnet_subjects": len(set(domains["fgnet"][3])), "seed": args.seed},
        "layer_epochs": args.layer_epochs, "epochs": args.epochs, "batch_size": args.batch_size, "threads": args.threads,
        "align_seconds_this_run": align_seconds, "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "torch": torch.__version__,
    }
    write_report(work, Path(args.out), args.name, setup)


def write_report(work, out, name, setup):
    """Collect every finished depth in ``work/results`` into ``out/name.{json,md}``."""
    results = {}
    for depth in ORDER:
        path = work / "results" / f"{depth}.json"
        if path.is_file():
            results[depth] = json.loads(path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"setup": setup, "depths": results}, indent=1))
    lines = [f"# Fine-tuning SFace at each depth ({name})", "",
             f"Command (last run): `{setup['command']}`", "",
             (f"One fixed split, seed {setup['split']['seed']}: {setup['split']['n_train_faces']} "
             f"UTKFace training faces, {setup['split']['n_test_faces']} held out (and their "
             f"{setup['split']['n_degraded_faces']} degraded copies), FG-NET "
             f"{setup['split']['n_fgnet_images']} images of {setup['split']['n_fgnet_subjects']} "
             f"subjects never trained on. The layer: {setup['layer_epochs']} epochs from SFace's "
             f"weights; every other run: {setup['epochs']} more epoch(s) from that layer "
             "(layer-continued: the layer alone, the control), at the depth it names; batch "
             f"{setup['batch_size']}, {setup['threads']} torch threads, {setup['cpus']} CPUs "
             "(shared with other jobs: times are wall time under load)."), "",
            ("Compare the runs with each other: the shipped default was trained on every "
             "UTKFace image in the data folder, so it is no held-out reference on this split. "
             "`layer` is today's design (the embedding layer on frozen `conv_14_relu` maps); "
             "`last-stage` also trains conv_13-14 (the 7 x 7 stage), `more` conv_7-14, `whole` "
             "everything. Batch-norm statistics stay SFace's."), "",
             ("| run | domain | MAE | one-class-off | CS@5 | gender | 0-12 | 13-19 | 20-39 "
              "| 40-59 | 60+ |"), "|---|---|---|---|---|---|---|---|---|---|---|"]
    groups = ("0-12", "13-19", "20-39", "40-59", "60+")
    for depth, result in results.items():
        for domain in DOMAINS:
            v = result["domains"][domain]
            gender = "-" if v["gender_accuracy"] is None else f"{100 * v['gender_accuracy']:.1f} %"
            per = [v["mae_per_age_group"].get(g) for g in groups]
            lines.append(f"| {depth} | {domain} | {v['mae']:.2f} | {100 * v['one_class_off']:.1f} % "
                         f"| {100 * v['cs5']:.1f} % | {gender} | "
                         + " | ".join("-" if x is None else f"{x:.2f}" for x in per) + " |")
    lines += ["", ("| run | steps | training s (this depth) | with the layer it starts from "
                   "| frozen-output s | FG-NET subject MAE min / median / max | ONNX vs torch "
                   "max abs diff | ONNX CPU ms a face |"), "|---|---|---|---|---|---|---|---|"]
    for depth, result in results.items():
        spread = result["domains"]["fgnet"]["subject_mae_spread"]
        lines.append(
            f"| {depth} | {result['steps']} | {result['train_seconds']:.0f} | "
            f"{result.get('train_seconds_with_layer', result['train_seconds']):.0f} | "
            f"{result['frozen_output_seconds']:.0f} | {spread['min']:.2f} / "
            f"{spread['median']:.2f} / {spread['max']:.2f} | "
            f"{result['onnx_vs_torch_max_abs_diff']:.2e} | {result['onnx_cpu_ms_per_face']:.1f} |")
    lines += ["", "Runs (each continues from the checkpoints in its `--work` folder):", ""]
    lines += [f"- {depth}: `{result.get('command', setup['command'])}` (finished "
              f"{result.get('finished_utc', '?')} UTC)" for depth, result in results.items()]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
