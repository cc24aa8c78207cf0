"""The Ray engine of ``sfc-deploy classify``: decoding and inference inside a Ray Data actor pool.

Rows are the video paths (``ray.data.from_items``); ``map_batches`` runs :class:`_Classifier`, a
callable class that Ray instantiates once per actor, so each actor loads the export once and keeps
it, with its runtime's intra-op threads matched to the CPUs the actor reserves (and on the GPU it
reserves, with ``--gpus-per-worker``). Each actor decodes the ``--batch`` videos of a batch and makes
their rows with the function the local engine uses (:func:`~sfc_deploy.scale.rows.make_rows`: videos of
one shape in one model call), so a bad video is a row with its error there too.
Rows stream back to the driver as they are made; the driver journals them and writes the Parquet
file (:func:`~sfc_deploy.scale.classify.classify`), so both engines resume from the same journal.

On one machine Ray is started here with this machine's CPUs and stopped at the end; with
``--address`` the job runs on an existing cluster (whose workers must read the video paths and the
export folder, e.g. from a shared file system).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sfc_deploy.errors import BackendUnavailableError
from sfc_deploy.scale.rows import ClassifyOptions, RayOptions, class_names, decoded, gpu_device, make_rows


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(
            f"--engine ray needs Ray Data ({exc}); pip install 'sfc-deploy[scale]' (or pip install 'ray[data]')"
        ) from exc
    return ray


class _Classifier:
    """Loaded once per actor: the export on its runtime (on its GPU where it reserves one), then the
    rows of each batch of ``options.batch`` paths, decoded here, same-shape videos in one model call."""

    def __init__(self, export_dir: str, options_json: str, threads: int, device: str | None = None) -> None:
        import torch

        from sfc_deploy.runtime.pipeline import load

        options = ClassifyOptions(**json.loads(options_json))
        torch.set_num_threads(threads)
        self.options = options
        where = {"device": device} if device is not None else {}
        self.dep = load(export_dir, options.runtime, precision=options.precision, threads=threads, **where)
        self.names = class_names(self.dep)
        self.spec = self.dep.input_spec

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        items = [(str(path), decoded(str(where), self.dep, self.options, self.spec))
                 for path, where in zip(batch["path"], batch["resolved"])]
        rows = make_rows(items, self.dep, self.names, self.options)
        return {"row": [json.dumps(row) for row in rows]}  # JSON: rows carry nulls and nested lists


def run_ray(todo: Sequence[str], export_dir: str | Path, options: ClassifyOptions, ray_options: RayOptions,
            record: Callable[[dict[str, Any]], None]) -> None:
    """Classify ``todo`` on Ray; ``record`` gets each row as it arrives (any order)."""
    if not todo:
        return
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        init = {"address": ray_options.address} if ray_options.address else {}
        ray.init(**init, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 configure_logging=False)
        started = True
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the CLI draws its own bar from the rows
        threads = max(1, int(ray_options.cpus_per_worker))
        fields = {k: v for k, v in vars(options).items() if k != "jsonl"}
        fields["threads"] = threads
        # workers need not share the driver's working directory: they read absolute paths
        ds = ray.data.from_items([{"path": p, "resolved": str(Path(p).absolute())} for p in todo])
        ds = ds.map_batches(
            _Classifier,
            fn_constructor_kwargs={"export_dir": str(Path(export_dir).resolve()), "options_json": json.dumps(fields),
                                   "threads": threads, "device": gpu_device(options.runtime, ray_options.gpus_per_worker)},
            batch_size=options.batch,
            compute=ray.data.ActorPoolStrategy(size=ray_options.workers),
            num_cpus=ray_options.cpus_per_worker,
            num_gpus=ray_options.gpus_per_worker or None,
        )
        for item in ds.iter_rows():
            record(json.loads(item["row"]))
    finally:
        if started:
            ray.shutdown()
