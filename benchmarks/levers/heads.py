"""Research: age/gender head settings on pooled age-gender features, one UTKFace fold."""
import sys, time
import numpy as np
from sklearn.model_selection import KFold
from sklearn.neural_network import MLPRegressor, MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.compose import TransformedTargetRegressor
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from features import load, select, utk_labels
from skagegender.metrics import one_class_off_score, cumulative_score

d, idx = load("utkface")
age, gender = utk_labels(d["paths"])
X = select(d, idx, ["fc1", "conv_8_relu", "conv_12_relu", "conv_14_relu"], False)
ok = d["found"]
tr, te = next(KFold(5, shuffle=True, random_state=0).split(age))
tr = tr[ok[tr]]; te_ok = ok[te]


def mlp(**kw):
    base = dict(hidden_layer_sizes=(512,), alpha=1e-3, batch_size=128, learning_rate_init=1e-3,
                max_iter=80, early_stopping=True, n_iter_no_change=8, random_state=0)
    base.update(kw)
    return base


configs = {
    "A_512_a1e-3_es": lambda: make_pipeline(StandardScaler(), MLPRegressor(**mlp())),
    "B_default": lambda: make_pipeline(StandardScaler(), MLPRegressor(random_state=0, early_stopping=True)),
    "C_log_target": lambda: TransformedTargetRegressor(make_pipeline(StandardScaler(), MLPRegressor(**mlp())), func=np.log1p, inverse_func=np.expm1),
    "D_512x256_a1e-2": lambda: make_pipeline(StandardScaler(), MLPRegressor(**mlp(hidden_layer_sizes=(512, 256), alpha=1e-2))),
    "E_sqrt_target_a1e-2": lambda: TransformedTargetRegressor(make_pipeline(StandardScaler(), MLPRegressor(**mlp(alpha=1e-2))), func=np.sqrt, inverse_func=np.square),
    "G_mlpclf_gender": None,
}
for name in sys.argv[1:]:
    t = time.time()
    if name.startswith("G"):
        m = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(512,), alpha=1e-2, early_stopping=True, random_state=0, max_iter=80, n_iter_no_change=8)).fit(X[tr], gender[tr])
        g = m.predict(X[te][te_ok])
        print(f"{name:20s} gender {np.mean(g == gender[te][te_ok]):.4f} {time.time()-t:.0f}s", flush=True)
        continue
    m = configs[name]().fit(X[tr], age[tr])
    p = np.full(len(te), np.median(age[tr])); p[te_ok] = m.predict(X[te][te_ok]); p = np.clip(p, 0, 100)
    print(f"{name:20s} MAE {np.abs(p-age[te]).mean():.3f} 1CoA {one_class_off_score(age[te], p):.4f} CS5 {cumulative_score(age[te], p):.4f} {time.time()-t:.0f}s", flush=True)
