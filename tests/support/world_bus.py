"""A generated world's rows as the envelopes WSP would put on the bus, for projector tests.

The envelope is built exactly as WSP builds it (`Envelope`, `engine_event_id` over the catalogue's
primary key and the world pins, the whole row as payload, truth columns included), and rows come
in event-time order, as the stream-sorted views deliver them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from fraudrt.contracts import Envelope, encode_envelope, engine_event_id
from fraudrt.engine import GenerateRequest, WorldSummary, generate_world, load_catalogue, output_paths

PRODUCER = "svc:world_stream_producer"


def generate(out_dir: Path, **request: Any) -> WorldSummary:
    return generate_world(GenerateRequest(out_dir=str(out_dir), **request))


def output_rows(world: WorldSummary, output_id: str) -> pl.DataFrame:
    """Every row of one output, in event-time order (ts_utc, then the primary key)."""
    spec = load_catalogue().output(output_id)
    df = pl.read_parquet(output_paths(world.engine_run_root, output_id, world.scenario_id))
    key = [c for c in spec.primary_key if c in df.columns]
    return df.sort(["ts_utc", *key], maintain_order=True)


class WorldPins:
    """The pins a run stamps on every envelope of one world."""

    def __init__(self, world: WorldSummary, platform_run_id: str) -> None:
        self.platform_run_id = platform_run_id
        self.world = world
        self.scenario_run_id = hashlib.sha256(f"sr|{platform_run_id}".encode()).hexdigest()[:32]

    def envelope(self, output_id: str, row: Mapping[str, Any], primary_key: Iterable[str]) -> bytes:
        w = self.world
        pins = {"manifest_fingerprint": w.manifest_fingerprint, "parameter_hash": w.parameter_hash,
                "seed": w.seed, "scenario_id": w.scenario_id}
        env = Envelope(
            event_id=engine_event_id(output_id, row, list(primary_key), pins), event_type=output_id,
            schema_version="v1", ts_utc=row["ts_utc"], platform_run_id=self.platform_run_id,
            scenario_run_id=self.scenario_run_id, manifest_fingerprint=w.manifest_fingerprint,
            parameter_hash=w.parameter_hash, seed=w.seed, scenario_id=w.scenario_id, run_id=w.run_id,
            producer=PRODUCER, payload=dict(row))
        return encode_envelope(env)

    def envelopes(self, output_id: str, rows: pl.DataFrame) -> list[bytes]:
        primary_key = load_catalogue().output(output_id).primary_key
        return [self.envelope(output_id, row, primary_key) for row in rows.iter_rows(named=True)]
