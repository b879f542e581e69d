"""Per-stage seconds of a ``doc-migrate full`` run, read back from its Dagster instance.

Each asset is one step of the run; a step's duration (STEP_START → STEP_SUCCESS/FAILURE) is split
into the asset's own work (the ``seconds`` of the run totals it logs) and the rest, which
is Dagster's bookkeeping: one ASSET_MATERIALIZATION event per partition written to the event
log after the work is done.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

STAGES = {
    "source_manifest": "scan",
    "parsed_docs": "parse",
    "embeddings": "embed",
    "loaded_rows": "load",
}


def stage_of(step_key: str) -> str:
    return STAGES.get(step_key, "checks")


TOTALS = " run totals: "  # the asset's run-log line (per_partition_metadata): its "seconds" is the work


def _read_totals(entry: Any, steps: dict[str, dict[str, Any]]) -> None:
    """An asset's work seconds, from the totals line it logs once per step (each partition's
    materialization carries that partition's own seconds only)."""
    message = getattr(entry, "user_message", "") or ""
    if TOTALS not in message or not entry.step_key:
        return
    try:
        totals = json.loads(message.split(TOTALS, 1)[1])
    except ValueError:
        return
    if isinstance(totals, dict) and isinstance(totals.get("seconds"), int | float):
        step = steps.setdefault(entry.step_key, {"seconds": 0.0, "work_seconds": None, "materializations": 0})
        step["work_seconds"] = (step["work_seconds"] or 0.0) + float(totals["seconds"])


def read_stage_times(dagster_home: Path, run_ids: list[str]) -> dict[str, Any]:
    """Step and stage seconds summed over ``run_ids``; empty when the instance cannot be read."""
    if not run_ids or not (dagster_home / "dagster.yaml").exists():
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from dagster import DagsterEventType, DagsterInstance

        instance = DagsterInstance.from_config(str(dagster_home))
        steps: dict[str, dict[str, Any]] = {}
        run_seconds = 0.0
        events = 0
        try:
            for run_id in run_ids:
                logs = instance.all_logs(run_id)
                events += len(logs)
                run_start = run_end = None
                starts: dict[str, float] = {}
                for entry in logs:
                    ev = entry.dagster_event
                    if ev is None:
                        _read_totals(entry, steps)
                        continue
                    kind = ev.event_type_value
                    if kind == DagsterEventType.RUN_START.value:
                        run_start = entry.timestamp
                    elif kind in (DagsterEventType.RUN_SUCCESS.value, DagsterEventType.RUN_FAILURE.value):
                        run_end = entry.timestamp
                    elif kind == DagsterEventType.STEP_START.value and entry.step_key:
                        starts[entry.step_key] = entry.timestamp
                    elif kind in (DagsterEventType.STEP_SUCCESS.value, DagsterEventType.STEP_FAILURE.value) \
                            and entry.step_key in starts:
                        step = steps.setdefault(entry.step_key, {"seconds": 0.0, "work_seconds": None,
                                                                  "materializations": 0})
                        step["seconds"] += entry.timestamp - starts[entry.step_key]
                        step["failed"] = kind == DagsterEventType.STEP_FAILURE.value
                        step.setdefault("start", starts[entry.step_key])
                        step["end"] = entry.timestamp
                    elif kind == DagsterEventType.ASSET_MATERIALIZATION.value and entry.step_key:
                        step = steps.setdefault(entry.step_key, {"seconds": 0.0, "work_seconds": None,
                                                                  "materializations": 0})
                        step["materializations"] += 1
                if run_start is not None and run_end is not None:
                    run_seconds += run_end - run_start
        finally:
            instance.dispose()
    stages: dict[str, float] = {}
    windows: dict[str, list[float]] = {}
    work: dict[str, float] = {}
    overhead = 0.0
    for key, step in steps.items():
        stage = stage_of(key)
        stages[stage] = stages.get(stage, 0.0) + step["seconds"]
        if "start" in step:
            w0 = windows.setdefault(stage, [step["start"], step["end"]])
            w0[0], w0[1] = min(w0[0], step["start"]), max(w0[1], step["end"])
        w = step["work_seconds"] if step["work_seconds"] is not None else step["seconds"]
        work[stage] = work.get(stage, 0.0) + w
        overhead += max(0.0, step["seconds"] - w)
    return {
        "run_seconds": round(run_seconds, 2),
        "events": events,
        "steps": {k: {**v, "seconds": round(v["seconds"], 2),
                      "work_seconds": None if v["work_seconds"] is None else round(v["work_seconds"], 2)}
                  for k, v in steps.items()},
        "stages": {k: round(v, 2) for k, v in stages.items()},
        "stage_work": {k: round(v, 2) for k, v in work.items()},
        "stage_windows": windows,  # stage -> [first step start, last step end] (epoch seconds)
        "step_event_overhead": round(overhead, 2),
    }
