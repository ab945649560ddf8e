# Temporary device check (not part of the package): can a tiny CNN show the `paper` preset's pattern?
import json, os, sys, time
import numpy as np, pandas as pd, torch, torch.nn as nn, torch.nn.functional as F
sys.path.insert(0, "src")
from mvmammo.data.synthetic import generate_cohort
from mvmammo.data.synthetic.oracle import auc
from mvmammo.data.images import read_png
out = "/tmp/paper"
t = time.time()
s = generate_cohort(out, preset="paper", breasts=3000, size_cc=(128, 96), size_mlo=(128, 96), seed=0, workers=16, progress=False)
print("gen 3000@128", round(time.time() - t, 1), "s", {k: s["oracle"][k] for k in ("auc_cc", "auc_mlo", "auc_both")}, flush=True)
df = pd.read_csv(f"{out}/exams.csv")
dev = "cuda"
def load(v, hm):
    ims = np.stack([read_png(f"{out}/{p}") for p in df[f"{v}_path"]]).astype(np.float32)
    ims = (ims - ims.mean((1, 2), keepdims=True)) / (ims.std((1, 2), keepdims=True) + 1e-6)
    chans = [ims]
    if hm:
        for ch in ("benign", "malignant"):
            chans.append(np.stack([read_png(f"{out}/{p}") for p in df[f"{v}_heatmap_{ch}"]]).astype(np.float32) / 65535)
    return torch.tensor(np.stack(chans, 1), device=dev)
y = torch.tensor(df[["malignant", "benign"]].to_numpy(np.float32), device=dev)
split = df.split.to_numpy()
def net(c):
    L = []
    for a, b in ((c, 16), (16, 32), (32, 64), (64, 64), (64, 128)):
        L += [nn.Conv2d(a, b, 3, 2 if b != 16 else 1, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
    return nn.Sequential(*L, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 2)).to(dev)
res = {}
for hm in (False, True):
    for v in ("cc", "mlo"):
        X = load(v, hm)
        tr = np.flatnonzero(split == "train")
        curves = []
        for seed in range(3):
            torch.manual_seed(seed); m = net(X.shape[1]); opt = torch.optim.Adam(m.parameters(), 1e-3)
            cur = []
            for ep in range(30):
                m.train(); perm = np.random.default_rng(seed * 100 + ep).permutation(tr)
                for i in range(0, len(perm), 32):
                    b = perm[i:i + 32]; xb = X[b]
                    sh = np.random.randint(-4, 5, 2); xb = torch.roll(xb, (int(sh[0]), int(sh[1])), (2, 3))
                    loss = F.binary_cross_entropy_with_logits(m(xb), y[b]); opt.zero_grad(); loss.backward(); opt.step()
                m.eval()
                with torch.no_grad():
                    p = torch.cat([m(X[i:i + 512])[:, 0] for i in range(0, len(X), 512)]).cpu().numpy()
                cur.append([auc(df.malignant[split == sp], p[split == sp]) for sp in ("train", "val", "test")])
            curves.append(cur)
        c = np.array(curves)  # seed, epoch, (train, val, test)
        best = c[:, :, 1].argmax(1)
        key = f"{v}{'+hm' if hm else ''}"
        res[key] = {"best_epoch": best.tolist(), "test_at_best": [round(float(c[s, best[s], 2]), 3) for s in range(3)],
                    "mean_curve_train": np.round(c[:, :, 0].mean(0), 3).tolist(), "mean_curve_val": np.round(c[:, :, 1].mean(0), 3).tolist()}
        print(key, "best val epoch", best.tolist(), "test@best", res[key]["test_at_best"], flush=True)
        print("  train", res[key]["mean_curve_train"][:12], flush=True)
        print("  val  ", res[key]["mean_curve_val"][:12], "... last", res[key]["mean_curve_val"][-3:], flush=True)
json.dump(res, open(os.environ.get("OUT", "/tmp") + "/curves.json", "w"))
