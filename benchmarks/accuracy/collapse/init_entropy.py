"""Attention entropy, loss and grad norm of freshly initialised SFC on 8 cached videos, per seed (issue 16).

    python benchmarks/accuracy/collapse/init_entropy.py '{"prior": false}' 12 TRAIN.csv CACHE_DIR BACKBONE
"""
import math, sys, json
from pathlib import Path
import torch, torch.nn.functional as F
from sfc_deploy.data.datasets import read_csv_list
from sfc_deploy.train.sfc import SFCTrainOptions, build_model
from sfc_deploy.train.cache import FeatureCache
torch.set_num_threads(1)
videos = read_csv_list(sys.argv[3])
cache = FeatureCache(Path(sys.argv[4]), len(videos))
x = torch.stack([cache.view(i, 0) for i in range(0, 200, 25)])
y = torch.tensor([videos[i][1] for i in range(0, 200, 25)])
extra = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
for seed in range(int(sys.argv[2]) if len(sys.argv) > 2 else 12):
    model = build_model("slow8x8_tiny", sys.argv[5], SFCTrainOptions(seed=seed, **extra))
    model.train()
    out, m = model.sfc(x, return_attention=True)
    loss = F.cross_entropy(model.tail(out), y)
    loss.backward()
    gn = float(torch.cat([p.grad.flatten() for p in model.sfc.parameters() if p.grad is not None]).norm())
    H = float(-(m.detach() * m.detach().clamp_min(1e-12).log()).sum(-1).mean() / math.log(m.shape[-1]))
    print(f"seed {seed:2d} H/lnT {H:.3f} maxw {float(m.max(-1).values.mean()):.3f} loss {float(loss):.3f} grad {gn:.3g}")
