"""``sfc-deploy classify``: an export over a collection of videos, one row per video, resumable.

The local engine overlaps decoding with inference through the one prefetcher
(:class:`~sfc_deploy.data.prefetch.Prefetcher`): ``workers`` decoding threads (PyAV releases the
GIL while it decodes) work ahead of the model by at most ``prefetch`` videos, so memory stays
bounded by the queue depth, not the collection; the model serves the decoded videos in input order
on the calling thread. Every video goes through the same input function as predict, eval and bench
(:func:`~sfc_deploy.data.inputs.model_input`) and the same SFC pipeline.

A bad video (missing, corrupt, too short, smaller than a fixed-size export) becomes a row whose
``error`` says why; the job carries on. Rows are appended to a journal beside the output as they are
made (``.NAME.journal.jsonl``); the Parquet file (and optional JSON lines) is written atomically at
the end and the journal removed. A rerun with the same ``--out`` after a kill resumes from the
journal, and a rerun after a finished job skips every video already in the output: no finished row
is computed twice. The output is locked while a job writes it, so two jobs cannot both write it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sfc_deploy.common.atomic import atomic_write, atomic_write_text
from sfc_deploy.common.outputs import output_lock
from sfc_deploy.data.prefetch import Prefetcher
from sfc_deploy.errors import ConfigError, SfcError
from sfc_deploy.runtime.pipeline import Deployment, load
from sfc_deploy.scale.rows import (
    COLUMNS, ClassifyOptions, RayOptions, check_engine_device, class_names, classify_one, decode, make_rows,
)

Progress = Callable[[int, int], None]


def journal_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.journal.jsonl")


def read_rows(out: Path) -> list[dict[str, Any]]:
    """The rows of a finished output (Parquet)."""
    import pyarrow.parquet as pq

    try:
        return pq.read_table(out).to_pylist()
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ConfigError(f"{out} is not a readable predictions file ({exc}); choose another --out or delete it") from None


def _read_journal(path: Path) -> list[dict[str, Any]]:
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill: that video is simply done again
        if isinstance(row, dict) and "path" in row:
            rows.append(row)
    return rows


ENGINES = ("local", "ray")


def classify(
    paths: Sequence[str],
    export_dir: str | Path,
    out: str | Path,
    options: ClassifyOptions = ClassifyOptions(),
    *,
    engine: str = "local",
    ray: RayOptions | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Classify ``paths`` with the export in ``export_dir``; write the rows to ``out`` (Parquet).

    ``engine`` "local" decodes on threads of this process and infers here; "ray" runs both inside
    a Ray Data actor pool (:mod:`sfc_deploy.scale.ray_engine`). Both make the same rows, journal
    them here as they arrive, and resume from the same journal and output.

    Returns:
        A summary: videos in total, done before (skipped), classified now, failed (rows with an
        error), wall seconds of this run, videos/s, summed decode and model seconds.
    """
    options.check()
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    check_engine_device(engine, options.device)
    ray = ray or RayOptions()
    ray.check()
    out = Path(out)
    with output_lock(out):
        done: dict[str, dict[str, Any]] = {}
        if out.is_file():
            done.update((r["path"], r) for r in read_rows(out))
        journal = journal_path(out)
        done.update((r["path"], r) for r in _read_journal(journal))
        todo = [p for p in paths if p not in done]
        new: dict[str, dict[str, Any]] = {}
        extra = {"threads": options.threads} if options.threads else {}
        if options.device is not None:
            extra["device"] = options.device
        dep = load(export_dir, options.runtime, precision=options.precision, **extra)
        try:
            dep.check(("head", "sfc", "tail"))  # a bad export fails here, before any journal or worker
            options.check_spec(dep.input_spec)  # segments against a fixed time axis: one line, no rows
            if engine == "ray":
                dep.close()  # the driver only checks: the actors load the export themselves
            fresh = not journal.exists()
            try:
                with journal.open("a", encoding="utf-8") as log:
                    def record(row: dict[str, Any]) -> None:
                        new[row["path"]] = row
                        log.write(json.dumps(row) + "\n")
                        log.flush()
                        if progress is not None:
                            progress(len(paths) - len(todo) + len(new), len(paths))

                    t0 = time.perf_counter()
                    if engine == "local":
                        _run(dep, todo, class_names(dep), options, record)
                    else:
                        from sfc_deploy.scale.ray_engine import run_ray

                        run_ray(todo, export_dir, options, ray, record)
                    wall = time.perf_counter() - t0
            except BaseException:
                if fresh and not new:
                    journal.unlink(missing_ok=True)  # nothing to resume from: leave nothing behind
                raise
        finally:
            dep.close()
        missing = [p for p in todo if p not in new]
        if missing:  # pragma: no cover - an engine that lost rows is a bug, not a user error
            raise SfcError(f"the {engine} engine returned no row for {len(missing)} videos (first: {missing[0]})")
        rows = [done.get(p) or new[p] for p in paths]
        _write_outputs(rows, out, options.jsonl)
        journal.unlink(missing_ok=True)
    failed = sum(bool(r["error"]) for r in rows)
    return {
        "engine": engine,
        "videos": len(rows),
        "skipped": len(paths) - len(todo),
        "classified": len(todo),
        "succeeded": len(rows) - failed,
        "failed": failed,
        "seconds": wall,
        "videos_per_s": len(todo) / wall if wall > 0 else 0.0,
        "decode_s": sum(new[p]["decode_s"] or 0.0 for p in todo),
        "model_s": sum(new[p]["model_s"] or 0.0 for p in todo),
        "out": str(out),
    }


def _run(dep: Deployment, todo: list[str], names: tuple[str, ...], options: ClassifyOptions,
         record: Callable[[dict[str, Any]], None]) -> None:
    """Decode ahead on ``options.workers`` threads (at most ``options.prefetch`` ahead), infer in order,
    ``options.batch`` decoded videos at a time."""
    spec = dep.input_spec  # read once: the decoding threads only read plain data

    def decode_one(path: str):
        return decode(path, dep.config, spec, options.max_frames, options.segments, reference_only=options.fast_decode)

    with Prefetcher(decode_one, todo, depth=options.prefetch, workers=options.workers, name="sfc-decode") as stream:
        pending: list = []
        for got in stream:
            pending.append((got.item, got))
            if len(pending) == options.batch:
                for row in make_rows(pending, dep, names, options):
                    record(row)
                pending = []
        for row in make_rows(pending, dep, names, options):
            record(row)


def _schema():
    import pyarrow as pa

    return pa.schema([
        ("path", pa.string()), ("top1", pa.string()), ("top1_prob", pa.float64()),
        ("topk", pa.list_(pa.struct([("class", pa.string()), ("index", pa.int64()), ("prob", pa.float64())]))),
        ("peak_frames", pa.list_(pa.int64())), ("peak_seconds", pa.list_(pa.float64())),
        ("num_frames", pa.int64()), ("fps", pa.float64()), ("decode_s", pa.float64()), ("model_s", pa.float64()),
        ("error", pa.string()),
    ])


def _write_outputs(rows: list[dict[str, Any]], out: Path, jsonl: Path | None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=_schema())
    atomic_write(out, lambda tmp: pq.write_table(table, str(tmp)), suffix=".parquet")
    if jsonl is not None:
        atomic_write_text(jsonl, "".join(json.dumps({c: r.get(c) for c in COLUMNS}) + "\n" for r in rows))


def top1_of(rows: list[dict[str, Any]]) -> dict[str, str | None]:
    """path -> predicted class (None for an error row): for comparing runs and engines."""
    return {r["path"]: (r["top1"] if not r["error"] else None) for r in rows}


__all__ = ["COLUMNS", "ENGINES", "ClassifyOptions", "RayOptions", "check_engine_device", "classify", "classify_one", "journal_path", "read_rows", "top1_of"]
