"""Replay one `sfc-deploy train` run of the harder setting with its attention and output watched, step by step.

    python benchmarks/accuracy/collapse/attention_replay.py '{"tau": 4, "distill_weight": 0.5, "distill_temperature": 2.0, "recover": 0}' OUT [EPOCHS_IN_DETAIL] [WORK]

Runs ``train_sfc`` itself (same options as ``run.py``'s variants: batch 4, no flip, seed 0 unless
given, the work folder's cache ``WORK/cache_seed{seed}``; WORK defaults to /tmp/sfc-accuracy-hard)
and prints, per epoch: loss, training top-1, mean gradient norm, attention entropy over time / ln T
(H, 1 = uniform), mean largest attention weight (maxw), spread over time of the scaled attention
logits (lstd) and the spread over classes of the tail's logits (out_std); for the epochs listed,
the same per step with the time step each query of the batch's first video attends most (peak).
``collapse_tau4_distill.log`` beside it is its output for the tau-4 run that collapsed (NOTES.md).
"""
import json
import math
import sys
from pathlib import Path

import sfc_deploy.train.sfc as T
from sfc_deploy.data.datasets import load_video_list
from sfc_deploy.train.sfc import SFCTrainOptions, train_sfc
from sfc_deploy.train.views import Augment

extra = json.loads(sys.argv[1])
out = Path(sys.argv[2])
detail = [int(e) for e in sys.argv[3].split(",")] if len(sys.argv) > 3 and sys.argv[3] else []
work = Path(sys.argv[4] if len(sys.argv) > 4 else "/tmp/sfc-accuracy-hard")
log: list[dict] = []
build = T.build_model


def watched_model(*args, **kwargs):
    model = build(*args, **kwargs)
    sfc, normalise, tail = model.sfc, model.sfc.normalise, model.tail

    def norm(logits, t, k, d):
        m = normalise(logits, t, k, d)
        if sfc.training:
            md = m.detach()
            log.append({"H": float(-(md * md.clamp_min(1e-12).log()).sum(-1).mean() / math.log(t)),
                        "maxw": float(md.max(-1).values.mean()),
                        "lstd": float((logits * d ** -0.5).detach().std(-1).mean()),
                        "peak": md.argmax(-1)[0].tolist(), "t": t})
        return m

    def watched_tail(f):
        o = tail(f)
        if sfc.training and log:
            log[-1]["out_std"] = float(o.detach().float().std(-1).mean())
        return o

    sfc.normalise, model.tail = norm, watched_tail
    return model


steps: list[dict] = []
sfc_step = T.sfc_step


def watched_step(*args, **kwargs):
    r = sfc_step(*args, **kwargs)
    groups = len({tuple(f.shape) for f in args[1]})
    steps.append({"loss": r[0] / len(args[1]), "correct": r[1], "gnorm": r[3], "fw": log[-groups:]})
    return r


T.build_model, T.sfc_step = watched_model, watched_step
opts = {"seed": 0, "batch_size": 4, "augment": Augment(flip=False), **extra}
options = SFCTrainOptions(**opts)
videos = load_video_list(work / "data/train.csv")
train_sfc(videos, out, options, backbone="slow8x8_tiny", checkpoint=work / "backbone/backbone.safetensors",
          force=True, threads=1, cache_file=work / f"cache_seed{options.seed}", warn=print)
per = (len(videos) + options.batch_size - 1) // options.batch_size
for e in range(len(steps) // per):
    part = steps[e * per:(e + 1) * per]
    fw = [f for s in part for f in s["fw"]]
    mean = lambda key: sum(f.get(key, 0.0) for f in fw) / len(fw)  # noqa: E731
    print(f"epoch {e + 1}: loss {sum(s['loss'] for s in part) / per:.3f} acc {sum(s['correct'] for s in part) / len(videos):.2f} "
          f"gnorm {sum(s['gnorm'] for s in part) / per:.3g} H {mean('H'):.3f} maxw {mean('maxw'):.3f} "
          f"lstd {mean('lstd'):.3g} out_std {mean('out_std'):.3g}")
    if e + 1 in detail:
        for i, s in enumerate(part):
            f = s["fw"][0]
            print(f"   s{i:2d} loss {s['loss']:.3f} c {s['correct']} gn {s['gnorm']:.3g} H {f['H']:.3f} maxw {f['maxw']:.3f} "
                  f"lstd {f['lstd']:.3g} out_std {f.get('out_std', 0):.3g} peak {f['peak']}/{f['t']}")
