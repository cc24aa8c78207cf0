"""What a collapsed SFC checkpoint does with the harder setting's videos (NOTES.md, the tau-4 collapse).

    python benchmarks/accuracy/collapse/collapsed_checkpoint.py SFC_CHECKPOINT TAU [WORK]

Prints, for the first training videos: the norm of each head-feature time step of the cached view
(which steps hold the action), the time step each query attends most, the tail's logits on SFC's
output, and on a few hand-picked sets of time steps (with and without the action steps): a
collapsed run's logits are the same for every video because its attention skips the action steps.
``collapsed_checkpoint.log`` beside it is its output for that run.
"""
import sys
from pathlib import Path

import torch

from sfc_deploy.models.sfc_model import read_sfc_checkpoint
from sfc_deploy.train.cache import FeatureCache
from sfc_deploy.train.sfc import SFCTrainOptions, build_model

torch.set_num_threads(1)
run, tau = sys.argv[1], float(sys.argv[2])
work = Path(sys.argv[3] if len(sys.argv) > 3 else "/tmp/sfc-accuracy-hard")
model = build_model("slow8x8_tiny", work / "backbone/backbone.safetensors", SFCTrainOptions(tau=tau))
state, _ = read_sfc_checkpoint(run)
model.sfc.load_state_dict(state)
model.eval()
cache = FeatureCache(work / "cache_seed0", 200)
show = lambda t: [round(v, 2) for v in t.tolist()]  # noqa: E731
with torch.no_grad():
    for i in range(4):
        x = cache.view(i, 0)[None]
        out, m = model.sfc(x, return_attention=True)
        print(f"video {i}: feature norm per time step {[round(float(f.norm())) for f in x[0].unbind(1)]}")
        print(f"  each query's most attended step {m[0].argmax(-1).tolist()} (of {x.shape[2]})")
        print(f"  tail logits on SFC's output {show(model.tail(out)[0])}")
        print(f"  tail logits on every 4th step {show(model.tail(x[:, :, ::4])[0])}")
        for steps in ([1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45], [1, 5, 10, 14, 18, 21, 25, 29, 33, 37, 46, 46]):
            print(f"  tail logits on steps ...{steps[-3:]} {show(model.tail(x[:, :, steps])[0])}")
