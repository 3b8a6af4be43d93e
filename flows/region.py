"""The ``srcube-region`` Prefect flow: :func:`pipeline.run_region` as observable, retryable tasks.

search (retried) -> plan frames (retried) -> start the cube (template or resume) ->
write chunk batches (retried on I/O errors, cached on inputs) -> finalize (retried) -> artifact.

Tasks pass only data between them (the frozen :class:`srcube.pipeline.request.RunRequest`, STAC items,
frame decisions, chunk lists): each task plans its :class:`srcube.pipeline.region.RegionJob` from the
request and re-creates its lazy graph where it runs, and
computes on the flow's Dask cluster through ``worker_client`` (the task's worker thread secedes
while the chunks run on the cluster).

Re-running a failed flow run resumes it twice over: batches whose inputs (request, decisions,
template id, chunk list) match a completed batch are served from the task cache, and any batch
that does run skips the chunks already in the cube's manifest. A cube re-created from scratch
gets a new template id, so stale cache entries never stand in for its chunks.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import string
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.futures import wait
from prefect.tasks import exponential_backoff

from srcube.flows.settings import DaskSettings, ResultSettings, flush_worker_telemetry
from srcube.pipeline import redact
from srcube.pipeline.append import append_region, grows
from srcube.pipeline.errors import is_transient
from srcube.pipeline.options import RunOptions
from srcube.pipeline.params import BBox, DateRange
from srcube.pipeline.region import RegionJob
from srcube.pipeline.request import RunRequest
from srcube.pipeline.write.store import CubeStore

FoundJSON = dict[str, list[dict[str, Any]]]  # load.Found.to_json(): {"items": item dicts, "excluded": problems}
Write = tuple[str, tuple[int, ...]]

#: retries of the I/O tasks (catalog, asset reads, object store): 4 tries, 2, 4 and 8 s apart, +-50 %
RETRIES, RETRY_DELAYS, RETRY_JITTER = 3, exponential_backoff(backoff_factor=2), 0.5


#: test-only: the environment variable of the failure drill, the index of the write batch that writes half of its
#: chunks and then fails as a crashed worker would (:class:`InjectedFailure`). The flow process reads it, so it is
#: no parameter of the flow: deployments and their run form never show it. For tests and drills only.
FAIL_AT_BATCH_ENV = "SRCUBE_TEST_FAIL_AT_BATCH"


class InjectedFailure(RuntimeError):
    """Raised by the failure drill (:data:`FAIL_AT_BATCH_ENV`); never retried."""


def drill_batch() -> int | None:
    """The write batch the failure drill fails (:data:`FAIL_AT_BATCH_ENV`, test-only), or None where it is unset."""
    value = os.environ.get(FAIL_AT_BATCH_ENV, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        from srcube.pipeline.errors import InvalidOptionError

        raise InvalidOptionError(f"{FAIL_AT_BATCH_ENV}={value!r}: the failure drill takes a write batch's index "
                                 "(0, 1, ...); it is for tests only, unset it to run the flow") from None


def _retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what may pass next time (network, catalog, object store), not bad input or bugs."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            state.result(raise_on_failure=True)
        except BaseException as err:  # the state's exception, re-raised from its stored result
            exc = err
    return exc is not None and is_transient(exc)


@contextmanager
def _cluster_client() -> Iterator[Any]:
    """A client of the flow's Dask cluster from inside a task (seceding the task's thread), or a
    LocalCluster when the task runs outside Dask (a test calling ``.fn``).

    While the client is in use, Prefect's current transaction is hidden. The client talks to the
    worker's event loop from this thread, and asyncio copies this thread's context into those
    callbacks; a flow task that the worker starts from one of them would see this task's
    transaction as its parent, leave its commit to it, and never persist its result (measured
    with prefect 3.8.8 + prefect-dask 0.3.7: cached re-runs then miss finished batches).
    """
    from distributed import get_worker, worker_client
    from prefect.transactions import BaseTransaction

    try:
        get_worker()
    except ValueError:
        from srcube.pipeline.cluster import dask_client

        with dask_client(None, n_workers=1) as client:
            yield client
        return
    token = BaseTransaction.__var__.set(None)  # type: ignore[arg-type]
    try:
        with worker_client() as client:
            yield client
    finally:
        BaseTransaction.__var__.reset(token)


def _prepare(req: RunRequest) -> RegionJob:
    return RegionJob.from_request(req)


def _job(req: RunRequest, client: Any, found: FoundJSON | None = None, decisions: dict[str, Any] | None = None,
         build: bool = True) -> RegionJob:
    """The run's job, re-created where the task runs: loaded, decided and (``build``) built."""
    job = _prepare(req)
    job.load(client, found)
    if decisions is not None or build:
        job.decide(client, decisions)
    if build:
        job.build(client)
    return job


# --- tasks -----------------------------------------------------------------------------------


@task(name="search", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_jitter_factor=RETRY_JITTER,
      retry_condition_fn=_retry_if_transient)
def search_items(req: RunRequest) -> FoundJSON | None:
    """The STAC items of the request whose assets can be used, and the problems of the others
    (None for a Kelvins imgset, which needs no search)."""
    job = _prepare(req)
    if job.plan.profile.kind == "kelvins":
        return None
    found = job.find()  # unsigned items, each with its harmonisation decision attached
    logger = get_run_logger()
    logger.info("%d items in %s for %s %s", found.items_found, job.plan.collection, list(req.bbox), req.dates)
    if found.excluded:
        logger.warning("%d items left out for unusable assets: %s", found.items_found - len(found.items),
                       "; ".join(f"{p['item']} {p['asset']}: {p['reason']}" for p in found.excluded))
    return found.to_json()


@task(name="plan-frames", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_jitter_factor=RETRY_JITTER,
      retry_condition_fn=_retry_if_transient)
def plan_frames(req: RunRequest, items: FoundJSON | None) -> dict[str, Any]:
    """Clearance of every frame, the kept frames and (multi-frame) the composite windows."""
    with _cluster_client() as client:
        job = _job(req, client, items, build=False)
        decisions = job.decide(client)
    kept = sum(f["kept"] for f in decisions["frames"])
    get_run_logger().info("%d of %d frames kept (min_clear %s)", kept, len(decisions["frames"]),
                          job.opts.min_clear)
    return decisions


@task(name="start-cube", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_jitter_factor=RETRY_JITTER,
      retry_condition_fn=_retry_if_transient)
def start_cube(req: RunRequest, items: FoundJSON | None, decisions: dict[str, Any],
               batch_chunks: int) -> dict[str, Any]:
    """Write the cube's template (or keep the unfinished cube of the same request); plan batches."""
    with _cluster_client() as client:
        job = _job(req, client, items, decisions)
        resumed = job.start()
        batches = job.batches(batch_chunks)
    assert job.cube is not None
    attrs = job.plan.store.attrs()
    total = sum(job.plan.store.expected().values())
    pending = len(job.pending())
    get_run_logger().info("%s cube %s: %d of %d chunks to write, in %d batches",
                          "resuming" if resumed else "new", req.out, pending, total, len(batches))
    return {"resumed": resumed, "template_id": attrs["template_id"], "request_hash": attrs["request_hash"],
            "batches": [[[name, list(idx)] for name, idx in b] for b in batches], "total_chunks": total,
            "pending_chunks": pending}


@task(name="write-batch", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_jitter_factor=RETRY_JITTER,
      retry_condition_fn=_retry_if_transient,
      cache_policy=INPUTS - "items" - "fail" + TASK_SOURCE, cache_expiration=dt.timedelta(days=7),
      persist_result=True, task_run_name="write-batch-{index}")
def write_batch(req: RunRequest, items: FoundJSON | None, decisions: dict[str, Any], template_id: str,
                index: int, batch: list[list[Any]], fail: bool = False) -> dict[str, Any]:
    """Super-resolve and write one batch of chunks (those already in the manifest are skipped)."""
    t0 = time.perf_counter()
    writes: list[Write] = [(str(name), tuple(int(i) for i in idx)) for name, idx in batch]
    with _cluster_client() as client:
        job = _job(req, client, items, decisions)
        assert job.cube is not None
        if job.plan.store.attrs().get("template_id") != template_id:
            raise RuntimeError(f"{req.out} was re-created by another run (template id changed); "
                               "re-run the flow to start over")
        done = job.plan.store.written(writes)  # this batch's entries only, not the whole manifest
        todo = [w for w in writes if w not in done]
        if fail:  # the drill: write half of the batch, then fail as a crashed worker would
            n = job.write(client, only=todo[: len(todo) // 2]) if todo else 0
            raise InjectedFailure(f"injected failure in batch {index} after writing {n} of {len(todo)} chunks")
        n = job.write(client, only=todo) if todo else 0
    get_run_logger().info("batch %d: %d chunks written, %d already in the cube (%.1f s)", index, n,
                          len(writes) - len(todo), time.perf_counter() - t0)
    return {"index": index, "written": n, "skipped": len(writes) - len(todo)}


#: the cube attributes a finished flow run reports
SUMMARY_ATTRS = ("model", "scale", "sensor", "collection", "bbox", "dates", "bands", "crs", "resolution",
                 "stac_items_found", "request_hash", "complete")


@task(name="finalize-cube", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_jitter_factor=RETRY_JITTER,
      retry_condition_fn=_retry_if_transient)
def finalize_cube(req: RunRequest, summary: dict[str, Any]) -> dict[str, Any]:
    """Check the manifest, write the overviews, consolidate, mark the cube complete, write its STAC Collection
    and Item beside it; return its summary attributes."""
    from srcube.pipeline.write.stac import finalize

    attrs = finalize(CubeStore(req.out, req.options.store_options(req.out)), {"last_run": summary}).attrs
    return {k: attrs.get(k) for k in SUMMARY_ATTRS}


@task(name="append-cube", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_jitter_factor=RETRY_JITTER,
      retry_condition_fn=_retry_if_transient)
def append_cube(req: RunRequest) -> dict[str, Any]:
    """``options.mode = "append"`` onto an existing cube: add the request's new dates to it (one task: a weekly
    append is small; it holds the cube's lock, resumes its staging cube and finishes a cut-short append)."""
    with _cluster_client() as client:
        cube = append_region(RegionJob.from_request(req), client)
    attrs = cube.attrs
    return {"time_steps": int(cube.sizes["time"]), "appends": len(attrs.get("appended", [])),
            **{k: attrs.get(k) for k in SUMMARY_ATTRS}}


# --- the flow --------------------------------------------------------------------------------


def _write_task() -> Any:
    """The write-batch task, its results and cache records in ``SRCUBE_RESULT_STORAGE`` when set: shared
    storage lets a retried run on another pod or machine skip the batches that finished. Prefect wants
    result storage saved as a block: it is saved here, in the flow run, from the URL."""
    storage = ResultSettings.from_env().storage()
    if storage is None:
        return write_batch
    import hashlib

    name = "srcube-results-" + hashlib.sha256(str(storage.basepath).encode()).hexdigest()[:12]
    storage.save(name, overwrite=True)
    return write_batch.with_options(result_storage=storage)


def reference_day() -> dt.date:
    """The day relative date windows end on: the flow run's scheduled start (UTC), else today."""
    from prefect.runtime import flow_run

    when = flow_run.scheduled_start_time
    if when is None:
        return dt.datetime.now(dt.UTC).date()
    return dt.datetime.fromisoformat(str(when)).astimezone(dt.UTC).date()


def build_request(bbox: Sequence[float] | str, dates: str | Sequence[str], catalog: str, collection: str | None,
                  bands: Sequence[str] | None, model: str, scale: int | None, out: str,
                  options: Mapping[str, Any] | None, today: dt.date | None = None) -> RunRequest:
    """The flow's parameters as a concrete, validated request: relative dates resolved, ``{start}``,
    ``{end}`` and ``{bbox}`` in ``out`` filled in. Raises srcube's typed errors on bad input."""
    from srcube.pipeline.errors import InvalidOptionError

    if not isinstance(out, str):
        raise InvalidOptionError(f"out must be the path or URL of the output zarr, got {out!r}")
    req = RunRequest.make(bbox, dates, catalog=catalog, collection=collection, bands=bands, model=model, scale=scale,
                          out=out, options=options, today=today or reference_day())
    days, box = DateRange.parse(req.dates), BBox.parse(req.bbox)
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(out) if f is not None}
        if fields - {"start", "end", "bbox"}:
            raise KeyError(", ".join(sorted(fields - {"start", "end", "bbox"})))
        target = out.format(start=days.start.isoformat(), end=days.end.isoformat(),
                            bbox="_".join(f"{v:.4f}" for v in box.as_tuple()))
    except (KeyError, IndexError, ValueError) as exc:
        raise InvalidOptionError(f"out {out!r} may use the placeholders {{start}}, {{end}} and {{bbox}} only: "
                                 f"{exc!r}") from None
    req = req.model_copy(update={"out": target})
    RegionJob.from_request(req)  # every check that needs only the request, before any task runs (typed errors)
    return req


def _markdown(req: RunRequest, final: dict[str, Any], start: dict[str, Any], summary: dict[str, Any], seconds: float,
              quicklook: bytes | None) -> str:
    rows = [("output", f"`{redact.redact(req.out)}`"),
            ("region (lon/lat)", ", ".join(f"{v:.4f}" for v in list(req.bbox))),
            ("dates", req.dates), ("catalog / collection", f"{req.catalog} / {final.get('collection')}"),
            ("sensor", final.get("sensor")), ("bands", ", ".join(final.get("bands") or [])),
            ("model", f"{final.get('model')} x{final.get('scale')}"),
            ("CRS / resolution", f"{final.get('crs')} / {final.get('resolution')} m"),
            ("STAC items found", final.get("stac_items_found")), ("resumed an unfinished cube", start["resumed"]),
            ("chunks in the cube", start["total_chunks"]),
            ("chunks written by this run", summary["chunk_writes"]),
            ("batches (from cache)", f"{summary['batches']} ({summary['cached_batches']})"),
            ("flow seconds", f"{seconds:.1f}"),
            ("complete", final.get("complete"))]
    text = "## srcube cube\n\n| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    if quicklook:
        text += f"\n![quicklook](data:image/png;base64,{base64.b64encode(quicklook).decode()})\n"
    return text


@flow(name="srcube-region", task_runner=DaskSettings.from_env().task_runner(), persist_result=True,
      validate_parameters=True)
def region_flow(bbox: list[float] | str, dates: str | list[str] = "last 30 days", catalog: str = "sample",
                collection: str | None = None, bands: list[str] | None = None, model: str = "auto",
                scale: int | None = None, out: str = "srcube.zarr", options: RunOptions | None = None,
                batch_chunks: int = 8) -> dict[str, Any]:
    """Super-resolve ``bbox`` over ``dates`` into the zarr cube ``out``, as Prefect tasks on Dask.

    dates: ``YYYY-MM-DD/YYYY-MM-DD`` or a window ending on the run's scheduled day ("last 30
    days", "last 2 weeks", "yesterday"). out: local path or URL (``s3://...``); may contain
    ``{start}``, ``{end}``, ``{bbox}``. options: :class:`srcube.pipeline.options.RunOptions` (the flow's
    parameter schema lists every option with its help text and choices).
    batch_chunks: output locations per write task. (Tests drill a failed batch with the environment
    variable :data:`FAIL_AT_BATCH_ENV`, not with a parameter.)
    """
    try:
        return _region(bbox, dates, catalog, collection, bands, model, scale, out, options, batch_chunks)
    finally:
        flush_worker_telemetry()  # before a cluster made for this run closes with the workers' last logs


def _region(bbox: list[float] | str, dates: str | list[str], catalog: str, collection: str | None,
            bands: list[str] | None, model: str, scale: int | None, out: str, options: RunOptions | None,
            batch_chunks: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    redact.install()
    logger = get_run_logger()
    req = build_request(bbox, dates, catalog, collection, bands, model, scale, out,
                        options.given() if isinstance(options, RunOptions) else options)
    fail_at = drill_batch()
    logger.info("request %s %s on %s with %s -> %s", list(req.bbox), req.dates, catalog, model, req.out)
    if grows(CubeStore(req.out, req.options.store_options(req.out)), req.options.mode):
        grown = append_cube.submit(req).result()
        logger.info("cube %s: %d time steps after %d append(s)", req.out, grown["time_steps"], grown["appends"])
        return {"out": req.out, "appended": True, **grown, "seconds": round(time.perf_counter() - t0, 2)}
    # one writer per store: the flow process holds the output's lock while its tasks write
    with _prepare(req).locked():
        items = search_items.submit(req).result()
        decisions = plan_frames.submit(req, items).result()
        start = start_cube.submit(req, items, decisions, batch_chunks).result()
        write = _write_task()
        futures = [write.submit(req, items, decisions, start["template_id"], i, batch,
                                fail=fail_at == i)
                   for i, batch in enumerate(start["batches"])]
        wait(futures)
        results = [f.result() for f in futures]  # the first failed batch fails the flow, after all have run
        fresh = [r for f, r in zip(futures, results, strict=True) if f.state.name != "Cached"]
        cached = len(results) - len(fresh)
        summary = {"resumed": start["resumed"], "chunk_writes": sum(r["written"] for r in fresh),
                   "batches": len(results), "cached_batches": cached}
        final = finalize_cube.submit(req, summary).result()
    quicklook = None
    try:
        from srcube.pipeline.write.quicklook import cube_quicklook

        quicklook = cube_quicklook(CubeStore(req.out, req.options.store_options(req.out)))
    except Exception as exc:  # the quicklook is a courtesy; the cube is complete either way
        logger.warning("no quicklook: %s", exc)
    seconds = time.perf_counter() - t0
    create_markdown_artifact(_markdown(req, final, start, summary, seconds, quicklook),
                             key="srcube-region", description=f"srcube cube {req.out}")
    logger.info("cube %s complete: %d chunks written by this run, %d batches from cache", req.out,
                summary["chunk_writes"], cached)
    return {**summary, "out": req.out, "total_chunks": start["total_chunks"], "complete": final["complete"],
            "seconds": round(seconds, 2)}

