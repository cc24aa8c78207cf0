"""A few SFC training steps with mixed precision on a device (step 3 of ``benchmarks/gpu/run.sh``).

Runs :func:`sfc_deploy.train.sfc.train_steps_on_random_features` (random clips, no decoder: the
head runs once, SFC then takes ``--steps`` steps through the training step the CLI uses, autocast
and, for fp16, the gradient scaler) and writes its losses and wall seconds as JSON. The loss must
be finite and fall (one batch is memorised); the seconds are wall time on the named device,
synchronised, including the head pass.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from sfc_deploy.common.device import resolve_device, synchronize
from sfc_deploy.common.environment import device_name
from sfc_deploy.train.sfc import train_steps_on_random_features


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="bf16")
    parser.add_argument("--backbone", default="slow8x8_tiny")
    parser.add_argument("--frames", type=int, default=16, help="sampled frames per clip")
    parser.add_argument("--size", default="32x40", help="HxW")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    device = resolve_device(args.device)
    h, w = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        synchronize(device)
        t0 = time.perf_counter()
        result = train_steps_on_random_features(tmp, device=device, amp=args.amp, steps=args.steps,
                                                backbone=args.backbone, batch_size=args.batch_size,
                                                frames=args.frames, size=(h, w))
        synchronize(device)
        seconds = time.perf_counter() - t0
    losses = result["losses"]
    record = {"device": device_name(device), "amp": args.amp, "backbone": args.backbone, "frames": args.frames,
              "size": [h, w], "batch_size": args.batch_size, "steps": args.steps, "losses": losses,
              "finite": all(map(lambda v: v == v and abs(v) != float("inf"), losses)),
              "loss_fell": losses[-1] < losses[0], "wall_s": seconds, "torch": torch.__version__,
              "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None}
    args.json.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))
    return 0 if record["finite"] and record["loss_fell"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
