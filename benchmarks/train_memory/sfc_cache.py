"""Peak resident memory of `train` (SFC) with the head-feature cache on disk, as the video list doubles.

    .venv/bin/python benchmarks/train_memory/sfc_cache.py 8 16 32     (one fresh process per size)

Each size trains SFC for 2 epochs (2 cached views per video, batch 4, slow8x8_tiny with random
weights, 1 thread) on synthetic videos of 96 frames at 96x128, in a fresh process, and prints the
process's peak RSS and the size of the cache folder. The cache is one file per video read one view
at a time, so memory should not grow with the list; the cache on disk does.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path


def one(n: int, root: Path) -> dict:
    from sfc_deploy.data.datasets import read_csv_list
    from sfc_deploy.data.synth import SynthOptions, write_synth_dataset
    from sfc_deploy.train.sfc import SFCTrainOptions, train_sfc
    from sfc_deploy.train.views import Augment

    write_synth_dataset(root / "data", SynthOptions(classes=2, train_per_class=n // 2, test_per_class=1, frames=96,
                                                    size=(96, 128), seed=1))
    videos = read_csv_list(root / "data/train.csv")
    train_sfc(videos, root / "run", SFCTrainOptions(epochs=2, batch_size=4, cache_views=2, augment=Augment(flip=True)),
              backbone="slow8x8_tiny", threads=1, force=True)
    return {"videos": len(videos), "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "cache_mib": sum(p.stat().st_size for p in (root / "run/feature_cache").iterdir()) / 2**20}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--one"]:
        print(json.dumps(one(int(argv[1]), Path(argv[2]))))
        return 0
    for n in [int(a) for a in argv] or [8, 16, 32]:
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, __file__, "--one", str(n), tmp], capture_output=True, text=True,
                                 check=True).stdout.strip().splitlines()[-1]
            print(out, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
