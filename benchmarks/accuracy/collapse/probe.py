"""Issue 16 collapse probe: per-step loss, attention entropy, logit spread and grad norm of SFC training.

Replays ``sfc-deploy train``'s loop on cached head features (batch 4, SGD lr 0.01 m 0.9, clip 1.0,
the step schedule) for several seeds, printing the first epoch step by step and a line per epoch::

    python benchmarks/accuracy/collapse/probe.py DATA/train.csv BACKBONE.safetensors CACHE_DIR SEEDS EPOCHS ['{"prior": true}']

H/lnT: attention entropy over time divided by its maximum (1 = uniform); maxw: mean largest
attention weight; logit std/range: spread over time of the (scaled) attention logits; gnorm: SFC's
gradient norm before clipping. The cache holds seed 0's views for every seed (one build).
The logs beside this file are its output on the harder setting (see ../NOTES.md); the paper-form
log was written while ``prior=False`` was the default: reproduce it with ``'{"prior": false}'``.
"""
import json, math, sys, time
from pathlib import Path
import torch, torch.nn.functional as F
from sfc_deploy.data.datasets import read_csv_list
from sfc_deploy.train.sfc import SFCTrainOptions, build_model, CACHE_DIR
from sfc_deploy.train.cache import cache_views, cache_key, open_or_build_cache, video_features
from sfc_deploy.train.common import epoch_generator, make_optimizer, Schedule
from sfc_deploy.train.views import FrameStore, Augment

torch.set_num_threads(1)
data, bb, cachedir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
seeds = [int(s) for s in sys.argv[4].split(",")]
epochs = int(sys.argv[5]); extra = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
videos = read_csv_list(data)
for seed in seeds:
    opts = SFCTrainOptions(seed=seed, epochs=epochs, batch_size=4, milestones=(max(1, round(epochs*8/15)), max(2, round(epochs*12/15))),
                           augment=Augment(flip=False), **extra)
    model = build_model("slow8x8_tiny", bb, opts)
    store = FrameStore(videos, preload=False)
    # the cache is shared across seeds in this probe (views of seed 0)
    views = cache_views(opts.augment, 0, len(store), 4, model.config.stride)
    key = cache_key(model, [str(p) for p, _ in videos], bb, views, None)
    model.eval()
    cache, _ = open_or_build_cache(cachedir, key, len(store), lambda i: video_features(model, store, i, views[i], opts.augment, None))
    captured = {}
    orig = model.sfc.normalise
    def norm(logits, t, k, d):
        m = orig(logits, t, k, d)
        scaled = logits * d ** -0.5 if model.sfc.config.logit_scale == "sqrt_d" else logits
        captured["std"] = float(scaled.detach().std(-1).mean()); captured["range"] = float((scaled.max(-1).values - scaled.min(-1).values).detach().mean())
        captured["H"] = float(-(m.detach() * m.detach().clamp_min(1e-12).log()).sum(-1).mean() / math.log(t))
        captured["maxw"] = float(m.max(-1).values.mean())
        return m
    model.sfc.normalise = norm
    opt = make_optimizer("sgd", model.sfc.parameters(), lr=opts.lr, momentum=0.9, weight_decay=1e-5)
    sched = Schedule("step", opts.lr, epochs, opts.milestones, opts.warmup)
    for epoch in range(epochs):
        g = epoch_generator(seed, epoch)
        order = torch.randperm(len(store), generator=g).tolist()
        steps = (len(order) + 3) // 4
        model.train()
        L = []; acc = 0
        for step in range(steps):
            batch = order[step*4:(step+1)*4]
            draws = [int(torch.randint(4, (1,), generator=g)) for _ in batch]
            x = torch.stack([cache.view(b, d) for b, d in zip(batch, draws)])
            y = torch.tensor([store.label(b) for b in batch])
            for gr in opt.param_groups: gr["lr"] = sched.at(epoch, step/steps)
            opt.zero_grad()
            logits = model.tail(model.sfc(x))
            loss = F.cross_entropy(logits, y)
            loss.backward()
            gn = float(torch.nn.utils.clip_grad_norm_(list(model.sfc.parameters()), opts.clip_grad if opts.clip_grad > 0 else float("inf")))
            opt.step()
            L.append(float(loss)); acc += int((logits.argmax(-1) == y).sum())
            if epoch == 0 and (step < 5 or step % 10 == 0):
                print(f"seed {seed} e{epoch} s{step:3d} loss {float(loss):.3f} H/lnT {captured['H']:.3f} maxw {captured['maxw']:.3f} logit std {captured['std']:.3g} range {captured['range']:.3g} gnorm {gn:.3g} out std {float(logits.std()):.3g}", flush=True)
        print(f"seed {seed} epoch {epoch+1} loss {sum(L)/len(L):.3f} (first5 {sum(L[:5])/5:.3f} last quarter {sum(L[-steps//4:])/len(L[-steps//4:]):.3f}) acc {acc/len(order):.2f} H {captured['H']:.3f} std {captured['std']:.3g}", flush=True)
