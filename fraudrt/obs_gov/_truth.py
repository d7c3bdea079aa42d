"""The oracle's truth for a run, read by the run reporter only (decisions never see it, DESIGN §4).

The run's facts view (`s3://fraud-platform/<run>/sr/run_facts_view/*.json`, written by SR) names the
stream-view parts of the traffic output, in stream order. From them, with polars: per flow whether
it is fraud and its campaign type (`campaign_id` is `<type>_<nnnnn>`), and the traffic rows in the
order WSP streams them, so the number of AUTH_REQUESTs among the first N admitted traffic events is
a prefix sum: the decisions a run capped at N per output must end with.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import numpy as np
import polars as pl

from fraudrt.control_ingress.scenario_runner import RunFactsView
from fraudrt.substrate import split_s3_uri

LEGIT: Final = "legit"
_COLUMNS: Final = ["flow_id", "event_type", "fraud_flag", "campaign_id"]


def campaign_type(campaign_id: str | None) -> str | None:
    if not campaign_id:
        return None
    kind, _, serial = campaign_id.rpartition("_")
    return kind if kind and serial.isdigit() else campaign_id


@dataclass(frozen=True)
class Truth:
    """`label(flow_id)`: `legit`, `fraud:<campaign type>`, or None for a flow the world does not have."""

    traffic_output_id: str
    facts_ref: str
    labels: dict[int, str]
    # requests_prefix[n] = AUTH_REQUESTs among the first n traffic rows of the stream view.
    requests_prefix: Any
    flows_total: int
    fraud_flows_total: int

    def label(self, flow_id: int) -> str | None:
        return self.labels.get(flow_id)

    def expected_requests(self, traffic_rows: int) -> int:
        n = max(0, min(int(traffic_rows), len(self.requests_prefix) - 1))
        return int(self.requests_prefix[n])


def truth_from_frame(df: pl.DataFrame, traffic_output_id: str = "", facts_ref: str = "") -> Truth:
    """From the traffic rows in stream order (columns `_COLUMNS`)."""
    is_request = (df["event_type"] == "AUTH_REQUEST").to_numpy().astype(np.int64)
    prefix = np.concatenate([[0], np.cumsum(is_request)])
    requests = df.filter(pl.col("event_type") == "AUTH_REQUEST")
    labels: dict[int, str] = {}
    fraud = 0
    for flow_id, flag, campaign in requests.select("flow_id", "fraud_flag", "campaign_id").iter_rows():
        if flag:
            labels[int(flow_id)] = f"fraud:{campaign_type(campaign) or 'unknown'}"
            fraud += 1
        else:
            labels[int(flow_id)] = LEGIT
    return Truth(traffic_output_id=traffic_output_id, facts_ref=facts_ref, labels=labels, requests_prefix=prefix,
                 flows_total=len(labels), fraud_flows_total=fraud)


async def _get(s3: Any, bucket: str, key: str) -> bytes:
    resp = await s3.get_object(Bucket=bucket, Key=key)
    async with resp["Body"] as body:
        data: bytes = await body.read()
    return data


async def load_truth(s3: Any, platform_bucket: str, platform_run_id: str) -> Truth | None:
    """The run's truth, or None while SR has not written the run's facts view (not an error)."""
    prefix = f"{platform_run_id}/sr/run_facts_view/"
    listed = await s3.list_objects_v2(Bucket=platform_bucket, Prefix=prefix)
    keys = sorted(o["Key"] for o in listed.get("Contents", []))
    if not keys:
        return None
    # One scenario run per platform run in this platform; the first (sorted) is the one reported.
    facts = msgspec.json.decode(await _get(s3, platform_bucket, keys[0]), type=RunFactsView)
    locator = next((loc for loc in facts.locators if loc.role == "business_traffic"), None)
    if locator is None:
        return None
    frames = []
    for part in locator.parts:
        bucket, key = split_s3_uri(part.uri)
        data = await _get(s3, bucket, key)
        frames.append(pl.read_parquet(io.BytesIO(data), columns=_COLUMNS))
    df = pl.concat(frames) if frames else pl.DataFrame(schema={c: pl.Int64 for c in _COLUMNS})
    return truth_from_frame(df, locator.output_id, f"s3://{platform_bucket}/{keys[0]}")
