"""Ground truth for the simulated chargeback feed, read with polars from the world the run streams.

Default source: the run's SR facts view (`s3://<platform bucket>/<run>/sr/run_facts_view/<scenario
run id>.json`), whose locator for the mode's flow-anchor output lists the stream view's parts in the
oracle store. Configured instead (`case_labels.feed_truth_engine_run_root`): a local engine run
root, for runs started without SR. Only `flow_id` and `fraud_flag` are read; a baseline world has
no `fraud_flag` (no campaigns), so every flow is legitimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import anyio
import msgspec
import numpy as np
import polars as pl

from fraudrt.config import Settings
from fraudrt.control_ingress.scenario_runner import RunFactsView
from fraudrt.engine import output_paths
from fraudrt.substrate import polars_storage_options, s3_client

FLOW_ANCHOR_OUTPUTS: Final = {"fraud": "s3_flow_anchor_with_fraud_6B", "baseline": "s2_flow_anchor_baseline_6B"}


class TruthUnavailable(Exception):
    """The world's truth cannot be found for this run (no facts view, no such output): not a
    dependency outage, so the records that need it are dead-lettered with this reason."""


@dataclass(frozen=True)
class Truth:
    """Which flows exist in the world, and which of them are fraud."""

    flow_ids: np.ndarray  # sorted
    fraud: frozenset[int]

    def knows(self, flow_id: int) -> bool:
        i = int(np.searchsorted(self.flow_ids, flow_id))
        return i < len(self.flow_ids) and int(self.flow_ids[i]) == flow_id

    def is_fraud(self, flow_id: int) -> bool:
        return flow_id in self.fraud


def _read(paths: Sequence[str], storage_options: dict[str, str] | None) -> Truth:
    if not paths:
        raise TruthUnavailable("the truth output has no files")
    lf = pl.scan_parquet(list(paths), storage_options=storage_options)
    columns = lf.collect_schema().names()
    wanted = ["flow_id", "fraud_flag"] if "fraud_flag" in columns else ["flow_id"]
    df = lf.select(wanted).collect()
    ids = np.sort(df["flow_id"].cast(pl.Int64).to_numpy())
    fraud = (frozenset(int(f) for f in df.filter(pl.col("fraud_flag"))["flow_id"].to_list())
             if "fraud_flag" in columns else frozenset())
    return Truth(ids, fraud)


async def load_truth(settings: Settings, platform_run_id: str, scenario_run_id: str, scenario_id: str) -> Truth:
    output_id = FLOW_ANCHOR_OUTPUTS[settings.wsp.mode]
    root = settings.case_labels.feed_truth_engine_run_root
    if root:
        paths = [str(p) for p in output_paths(root, output_id, scenario_id)]
        return await anyio.to_thread.run_sync(_read, paths, None)
    key = f"{platform_run_id}/sr/run_facts_view/{scenario_run_id}.json"
    async with s3_client(settings.s3) as s3:
        try:
            obj = await s3.get_object(Bucket=settings.buckets.platform, Key=key)
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise TruthUnavailable(f"no SR facts view s3://{settings.buckets.platform}/{key}") from None
            raise
        async with obj["Body"] as body:
            raw: Any = await body.read()
    try:
        facts = msgspec.json.decode(raw, type=RunFactsView)
    except msgspec.ValidationError as exc:
        raise TruthUnavailable(f"the SR facts view does not decode: {exc}") from None
    locator = next((loc for loc in facts.locators if loc.output_id == output_id), None)
    if locator is None:
        raise TruthUnavailable(f"the SR facts view has no {output_id} locator")
    return await anyio.to_thread.run_sync(_read, [p.uri for p in locator.parts], polars_storage_options(settings.s3))
