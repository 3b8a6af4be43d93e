"""What a Prefect server recorded about a flow run: its task runs, artifacts and logs.

Prefect 3 writes task-run states on the server from events, after the flow has returned: a read at once may
find none yet (seen on a loaded CI machine). Reads here wait until the record is settled."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SETTLE_S = 90.0


@dataclass
class FlowRunRecord:
    run: Any
    tasks: list[Any]
    artifacts: list[Any]
    logs: list[Any]


async def _read(flow_run_id: Any) -> FlowRunRecord:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
        tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return FlowRunRecord(run, list(tasks), list(artifacts), list(logs))


def _settled(record: FlowRunRecord) -> bool:
    return record.run.state.is_final() and all(t.state is not None and t.state.is_final() for t in record.tasks)


def flow_run_record(flow_run_id: Any, until: Callable[[FlowRunRecord], bool] = lambda r: True,
                    timeout: float = SETTLE_S) -> FlowRunRecord:
    """The server's record of a finished flow run once every task run on it is final and `until(record)` holds;
    the last read after `timeout` seconds otherwise (the caller's asserts then say what is missing)."""
    deadline = time.monotonic() + timeout
    while True:
        record = asyncio.run(_read(flow_run_id))
        if (_settled(record) and until(record)) or time.monotonic() > deadline:
            return record
        time.sleep(0.5)
