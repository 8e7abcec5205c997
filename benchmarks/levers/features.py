"""Research: which pooled SFace layers / mirror averaging pay, on one UTKFace CV fold."""
import sys, time, os
from pathlib import Path
import numpy as np
from sklearn.model_selection import KFold

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "benchmarks" / "results" / "cache"
DIMS = {"fc1": 128, **{f"conv_{k}_relu": (256 if k in (5, 6) else 512 if k <= 12 else 1024) for k in range(5, 15)}}


def load(name):
    d = np.load(CACHE / f"{name}_feats.npz")
    layers = ["fc1"] + list(d["layers"])
    off = np.cumsum([0] + [DIMS[l] for l in layers])
    idx = {l: slice(off[i], off[i + 1]) for i, l in enumerate(layers)}
    return d, idx


def select(d, idx, layers, flip):
    a = d["orig"].astype(np.float32); b = d["mirror"].astype(np.float32)
    parts = []
    for l in layers:
        x = (a[:, idx[l]] + b[:, idx[l]]) / 2 if flip else a[:, idx[l]]
        if l == "fc1":
            x = x / np.linalg.norm(x, axis=1, keepdims=True)
        parts.append(x)
    return np.concatenate(parts, 1)


def utk_labels(paths):
    n = [os.path.basename(p).split("_") for p in paths]
    return np.array([float(x[0]) for x in n]), np.array([int(x[1]) for x in n])


if __name__ == "__main__":
    from skagegender.heads import AgeRegressor, GenderClassifier
    from skagegender.metrics import one_class_off_score, cumulative_score
    d, idx = load("utkface")
    age, gender = utk_labels(d["paths"])
    found = d["found"]
    tr, te = next(KFold(5, shuffle=True, random_state=0).split(age))
    configs = {
        "fc1": (["fc1"], False),
        "fc1+flip": (["fc1"], True),
        "agegender": (["fc1", "conv_8_relu", "conv_12_relu", "conv_14_relu"], False),
        "agegender+flip": (["fc1", "conv_8_relu", "conv_12_relu", "conv_14_relu"], True),
        "14+13+flip": (["fc1", "conv_13_relu", "conv_14_relu"], True),
        "all5-14+flip": (["fc1"] + [f"conv_{k}_relu" for k in range(5, 15)], True),
        "10-14+flip": (["fc1"] + [f"conv_{k}_relu" for k in range(10, 15)], True),
    }
    want = sys.argv[1:] or list(configs)
    for name in want:
        layers, flip = configs[name]
        X = select(d, idx, layers, flip)
        X[~found] = np.nan
        t = time.time()
        m = AgeRegressor(random_state=0).fit(X[tr], age[tr])
        p = m.predict(X[te]); ok = ~np.isnan(p); p[~ok] = np.nanmedian(age[tr])
        g = GenderClassifier(random_state=0).fit(X[tr], gender[tr])
        gp = g.predict(X[te])
        print(f"{name:16s} d={X.shape[1]:5d} MAE {np.abs(p-age[te]).mean():.3f} 1CoA {one_class_off_score(age[te], p):.4f} "
              f"CS5 {cumulative_score(age[te], p):.4f} gender {(gp==gender[te]).mean():.4f} {time.time()-t:.0f}s", flush=True)
