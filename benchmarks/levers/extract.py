"""Research extraction: aligned crops + many pooled SFace layers, original and mirrored.

Writes benchmarks/results/cache/{name}_crops.npy, {name}_meta.npz, {name}_feats.npz.
Used by benchmarks/accuracy.py to measure which layers / mirror / augmentation pay.
"""
import time, glob
from pathlib import Path
import numpy as np
from joblib import Parallel, delayed

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "benchmarks" / "results" / "cache"
LAYERS = tuple(f"conv_{k}_relu" for k in range(5, 15))


def crops_of(paths):
    from skagegender.embedding import ArcFaceEmbedder, align_face, load_image
    e = ArcFaceEmbedder()
    bb = e._backbone()
    out = np.zeros((len(paths), 112, 112, 3), np.uint8)
    found = np.zeros(len(paths), bool)
    for i, p in enumerate(paths):
        img = load_image(p)
        f = e._select(e._candidate_faces(img, bb), img)
        if f is not None:
            out[i] = align_face(img, f.landmarks)
            found[i] = True
    return out, found


def feats_of(crops):
    from skagegender.embedding._backbones import get_backbone
    bb = get_backbone("sface", layers=LAYERS)
    a = bb.embed(crops)
    b = bb.embed(np.ascontiguousarray(crops[:, :, ::-1]))
    return a.astype(np.float16), b.astype(np.float16)


def run(name, paths, n_jobs=2, chunk=64):
    CACHE.mkdir(parents=True, exist_ok=True)
    t = time.time()
    parts = Parallel(n_jobs=n_jobs)(delayed(crops_of)(paths[i:i + chunk]) for i in range(0, len(paths), chunk))
    crops = np.concatenate([p[0] for p in parts]); found = np.concatenate([p[1] for p in parts])
    np.save(CACHE / f"{name}_crops.npy", crops)
    print(name, "crops", crops.shape, "found", found.sum(), time.time() - t, flush=True)
    parts = Parallel(n_jobs=n_jobs)(delayed(feats_of)(crops[i:i + chunk]) for i in range(0, len(crops), chunk))
    fa = np.concatenate([p[0] for p in parts]); fb = np.concatenate([p[1] for p in parts])
    np.savez(CACHE / f"{name}_feats.npz", orig=fa, mirror=fb, found=found, paths=np.array(paths), layers=np.array(LAYERS))
    print(name, "feats", fa.shape, time.time() - t, flush=True)


if __name__ == "__main__":
    shared = ROOT.parent / "shared" / "data"
    fg = sorted(glob.glob(str(shared / "FGNET" / "images" / "*")))
    run("fgnet", fg)
    utk = sorted(glob.glob(str(shared / "UTKFace" / "*.jpg")))
    run("utkface", utk)
