"""Where the gradient goes in the first 26 steps of one seed (issue 16): |q|, |k|, F_abs dead fraction, grad norm per part, dL/dlogits.

    python benchmarks/accuracy/collapse/grad_flow.py SEED '{"prior": false}'   (paths: the /tmp/h16 work files of NOTES.md)
"""
import json, math, sys
from pathlib import Path
import torch, torch.nn.functional as F
from sfc_deploy.data.datasets import read_csv_list
from sfc_deploy.train.sfc import SFCTrainOptions, build_model
from sfc_deploy.train.cache import cache_views, cache_key, open_or_build_cache, video_features
from sfc_deploy.train.common import epoch_generator, make_optimizer
from sfc_deploy.train.views import FrameStore, Augment
from sfc_deploy.models.sfc import compressed_length
torch.set_num_threads(1)
videos = read_csv_list("/tmp/h16/hard/train.csv")
seed = int(sys.argv[1]); extra = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
opts = SFCTrainOptions(seed=seed, batch_size=4, augment=Augment(flip=False), **extra)
model = build_model("slow8x8_tiny", "/tmp/h16/bb/backbone.safetensors", opts)
store = FrameStore(videos, preload=False)
views = cache_views(opts.augment, 0, len(store), 4, model.config.stride)
key = cache_key(model, [str(p) for p, _ in videos], "/tmp/h16/bb/backbone.safetensors", views, None)
cache, _ = open_or_build_cache(Path("/tmp/h16/cache_hard"), key, len(store), None)
opt = make_optimizer("sgd", model.sfc.parameters(), lr=opts.lr, momentum=0.9, weight_decay=1e-5)
g = epoch_generator(seed, 0)
order = torch.randperm(len(store), generator=g).tolist()
sfc = model.sfc
for step in range(26):
    batch = order[step*4:(step+1)*4]
    draws = [int(torch.randint(4, (1,), generator=g)) for _ in batch]
    x = torch.stack([cache.view(b, d) for b, d in zip(batch, draws)])
    y = torch.tensor([store.label(b) for b in batch])
    model.train(); opt.zero_grad()
    f_abs = sfc.abstraction(x); f_abs.retain_grad()
    t = x.shape[2]; k = compressed_length(t, 2.0)
    q = sfc.theta_q(sfc.pool(f_abs, k)); kk = sfc.theta_k(f_abs)
    qf = q.transpose(1, 2).flatten(2); kf = kk.transpose(1, 2).flatten(2)
    d = qf.shape[-1]
    raw = torch.bmm(qf, kf.transpose(1, 2)); raw.retain_grad(); logits = raw
    m = sfc.normalise(raw, t, k, d)
    n, c, _, h, w = x.shape
    out = torch.matmul(m.unsqueeze(1), x.reshape(n, c, t, h * w)).reshape(n, c, -1, h, w)
    z = model.tail(out)
    loss = F.cross_entropy(z, y); loss.backward()
    gn = {name: float(torch.cat([p.grad.flatten() for pn, p in sfc.named_parameters() if pn.startswith(name) and p.grad is not None]).norm()) for name in ("abstraction", "theta_q", "theta_k")}
    tot = float(torch.nn.utils.clip_grad_norm_(list(sfc.parameters()), 1.0))
    if step % 5 == 0:
        lg = logits[0, 0].detach()
        srt = lg.sort().values
        H = float(-(m * m.clamp_min(1e-12).log()).sum(-1).mean() / math.log(t))
        print(f"step {step} loss {float(loss):.3f} H {H:.3f} |q| {float(qf.norm(dim=-1).mean()):.3g} |k| {float(kf.norm(dim=-1).mean()):.3g} "
              f"cos(q,k) mean {float(F.cosine_similarity(qf[:, :, None], kf[:, None], dim=-1).mean()):.3f} "
              f"k var over t/|k|^2 {float(kf.var(1).sum(-1).mean() / kf.pow(2).sum(-1).mean()):.4f} "
              f"F_abs zero frac {float((f_abs == 0).float().mean()):.3f} grads {gn} dlogits {float(logits.grad.norm()):.3g} dF_abs {float(f_abs.grad.norm()):.3g}")
        print("   logits row sorted (first/last 5):", [round(v, 2) for v in srt[:5].tolist()], [round(v, 2) for v in srt[-5:].tolist()], "argmax t", int(lg.argmax()), "of", t)
    opt.step()
