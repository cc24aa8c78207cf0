"""``sfc-deploy classify``: an export over a collection of videos, one row per video, resumable.

The local engine overlaps decoding with inference: a pool of decoding threads (PyAV releases the
GIL while it decodes) works ahead of the model by at most ``prefetch`` videos, so memory stays
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
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sfc_deploy.common.atomic import atomic_write, atomic_write_text
from sfc_deploy.common.outputs import output_lock
from sfc_deploy.data.inputs import InputSpec, ModelInput, model_input
from sfc_deploy.data.video import probe_video
from sfc_deploy.errors import ConfigError, SfcError
from sfc_deploy.runtime.pipeline import Deployment, load

Progress = Callable[[int, int], None]
COLUMNS = ("path", "top1", "top1_prob", "topk", "peak_frames", "peak_seconds", "num_frames", "fps", "decode_s",
           "model_s", "error")


@dataclass(frozen=True)
class ClassifyOptions:
    """How to run the job.

    Attributes:
        runtime, precision, threads: the deployment (as for predict).
        workers: decoding threads working ahead of the model.
        prefetch: most decoded (or decoding) videos held at once: the memory bound.
        top: classes per row; peaks: most-attended sampled frames per row.
        max_frames: most sampled frames per video (longer videos become segments); None: all.
        jsonl: also write the rows as JSON lines to this file.
    """

    runtime: str = "onnxruntime"
    precision: str = "fp32"
    threads: int | None = None
    workers: int = 2
    prefetch: int = 4
    top: int = 5
    peaks: int = 3
    max_frames: int | None = None
    jsonl: Path | None = None

    def check(self) -> None:
        for name in ("workers", "prefetch", "top", "peaks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"--max-frames must be >= 1, got {self.max_frames}")


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


@dataclass(frozen=True)
class RayOptions:
    """The Ray engine's cluster and actors (see :mod:`sfc_deploy.scale.ray_engine`).

    Attributes:
        address: an existing Ray cluster ("auto", "ray://host:10001"); None starts a local one.
        workers: actors, each loading the export once.
        cpus_per_worker: CPUs each actor reserves; its runtime gets as many intra-op threads.
        gpus_per_worker: GPUs each actor reserves (0 on a CPU machine).
    """

    address: str | None = None
    workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    def check(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise ConfigError(
                f"--cpus-per-worker must be > 0 and --gpus-per-worker >= 0, got {self.cpus_per_worker}, {self.gpus_per_worker}"
            )


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
        dep = load(export_dir, options.runtime, precision=options.precision, **extra)
        try:
            dep.check(("head", "sfc", "tail"))  # a bad export fails here, before any journal or worker
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


def class_names(dep: Deployment) -> tuple[str, ...]:
    n, names = dep.config.num_classes, dep.config.class_names
    return tuple(names) if names and len(names) == n else tuple(str(i) for i in range(n))


def _decode(path: str, config, spec: InputSpec, max_frames: int | None) -> tuple[ModelInput, Any, float]:
    t0 = time.perf_counter()
    info = probe_video(path)
    fitted = model_input(path, "sfc", config, spec, info=info, max_frames=max_frames)
    return fitted, info, time.perf_counter() - t0


def _run(dep: Deployment, todo: list[str], names: tuple[str, ...], options: ClassifyOptions,
         record: Callable[[dict[str, Any]], None]) -> None:
    """Decode ahead on ``options.workers`` threads (at most ``options.prefetch`` in flight), infer in order."""
    spec = dep.input_spec  # read once: the decoding threads only read plain data
    pending: deque[tuple[str, Future]] = deque()
    it = iter(todo)
    with ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="sfc-decode") as pool:
        def fill() -> None:
            while len(pending) < options.prefetch:
                path = next(it, None)
                if path is None:
                    return
                pending.append((path, pool.submit(_decode, path, dep.config, spec, options.max_frames)))

        try:
            fill()
            while pending:
                path, future = pending.popleft()
                fill()  # keep the decoders busy while the model serves this video
                record(_row(path, future, dep, names, options))
        finally:
            for _, future in pending:
                future.cancel()


def classify_one(path: str, dep: Deployment, names: tuple[str, ...], options: ClassifyOptions,
                 spec: InputSpec | None = None) -> dict[str, Any]:
    """One video's row, decoded and inferred on this thread (what each Ray actor does per video)."""
    future: Future = Future()
    try:
        future.set_result(_decode(path, dep.config, spec or dep.input_spec, options.max_frames))
    except Exception as exc:  # noqa: BLE001 - becomes the row's error
        future.set_exception(exc)
    return _row(path, future, dep, names, options)


def _row(path: str, future: Future, dep: Deployment, names: tuple[str, ...], options: ClassifyOptions) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(path=path, topk=[], peak_frames=[], peak_seconds=[], error="")
    try:
        fitted, info, decode_s = future.result()
    except SfcError as exc:
        return {**row, "error": _one_line(exc)}
    except Exception as exc:  # noqa: BLE001 - one bad file must not end the job
        return {**row, "error": f"{type(exc).__name__}: {_one_line(exc)}"}
    row.update(num_frames=info.num_frames, fps=info.fps, decode_s=decode_s)
    t0 = time.perf_counter()
    try:
        logits, attention = dep.predict_with_attention(fitted.tensor)
    except Exception as exc:  # noqa: BLE001 - e.g. a video too long for memory: its row says so
        return {**row, "error": f"model: {type(exc).__name__}: {_one_line(exc)}"}
    row["model_s"] = time.perf_counter() - t0
    probs = logits[0].float().softmax(-1)
    best = probs.topk(min(options.top, probs.numel()))
    topk = [{"class": names[int(i)], "prob": float(p)} for p, i in zip(best.values, best.indices)]
    mass = attention[0].float().sum(0)
    positions = mass.topk(min(options.peaks, mass.numel())).indices.tolist()
    frames = [int(fitted.sampled.frame_indices[0][i]) for i in positions]
    row.update(top1=topk[0]["class"], top1_prob=topk[0]["prob"], topk=topk, peak_frames=frames,
               peak_seconds=[f / info.fps if info.fps > 0 else None for f in frames])
    return row


def _one_line(exc: BaseException) -> str:
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())[:500]


def _schema():
    import pyarrow as pa

    return pa.schema([
        ("path", pa.string()), ("top1", pa.string()), ("top1_prob", pa.float64()),
        ("topk", pa.list_(pa.struct([("class", pa.string()), ("prob", pa.float64())]))),
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


__all__ = ["COLUMNS", "ENGINES", "ClassifyOptions", "RayOptions", "classify", "classify_one", "journal_path", "read_rows", "top1_of"]
