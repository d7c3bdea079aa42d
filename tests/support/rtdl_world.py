"""A generated engine world as the bus would carry it: canonical envelopes per output, in event-time order.

What WSP would send through IG, built directly from the world's parquet (same event id recipe, same
pins, the row as payload), so RTDL tests can put exactly a world's records on private streams.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

from fraudrt.contracts import Envelope, encode_envelope, engine_event_id
from fraudrt.engine import (
    GenerateRequest,
    generate_world,
    load_catalogue,
    output_paths,
    read_run_receipt,
    read_run_receipt_raw,
)

CONTEXT_OUTPUTS = {"arrival_events": "arrival_events_5B", "arrival_entities": "s1_arrival_entities_6B",
                   "flow_anchor_fraud": "s3_flow_anchor_with_fraud_6B",
                   "flow_anchor_baseline": "s2_flow_anchor_baseline_6B"}
TRAFFIC_OUTPUTS = {"traffic_fraud": "s3_event_stream_with_fraud_6B",
                   "traffic_baseline": "s2_event_stream_baseline_6B"}


def make_world(out_dir: Path, n_flows: int, seed: int = 42, **kw: object) -> Path:
    """Generate a world (both modes) and return its engine run root."""
    summary = generate_world(GenerateRequest(out_dir=str(out_dir), n_flows=n_flows, seed=seed, **kw))  # type: ignore[arg-type]
    return Path(summary.engine_run_root)


def output_rows(root: Path, output_id: str) -> list[dict[str, object]]:
    """The output's rows in stream order: by ts_utc, then file order (the stream sort's tie-break)."""
    receipt = read_run_receipt(root)
    scenario = read_run_receipt_raw(root)["scenario_ids"][0]
    df = pl.read_parquet(output_paths(root, output_id, scenario, receipt=receipt))
    return df.with_row_index("_row").sort(["ts_utc", "_row"]).drop("_row").to_dicts()


def envelopes(root: Path, output_id: str, platform_run_id: str) -> list[bytes]:
    """Each row of `output_id` as an encoded canonical envelope of `platform_run_id`, in stream order."""
    receipt = read_run_receipt(root)
    scenario = read_run_receipt_raw(root)["scenario_ids"][0]
    spec = load_catalogue().output(output_id)
    pins = {"manifest_fingerprint": receipt.manifest_fingerprint, "parameter_hash": receipt.parameter_hash,
            "seed": receipt.seed, "scenario_id": scenario}
    scenario_run_id = hashlib.sha256(f"test|{platform_run_id}".encode()).hexdigest()[:32]
    out = []
    for row in output_rows(root, output_id):
        out.append(encode_envelope(Envelope(
            event_id=engine_event_id(output_id, row, spec.primary_key, pins), event_type=output_id,
            schema_version="v1", ts_utc=str(row["ts_utc"]), platform_run_id=platform_run_id,
            scenario_run_id=scenario_run_id, manifest_fingerprint=receipt.manifest_fingerprint,
            parameter_hash=receipt.parameter_hash, seed=receipt.seed, scenario_id=scenario,
            run_id=scenario_run_id, producer="test:rtdl_world",
            payload=row)))
    return out
