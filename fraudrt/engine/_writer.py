"""Turning a simulated world into the engine's files: frames per output, parquet parts, gate bundles."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ._interface import Catalogue, OutputSpec, render_template
from ._world import TIMEZONES, World, WorldKey

TS_FORMAT_UTC = "%Y-%m-%dT%H:%M:%S%.6fZ"
TS_FORMAT_LOCAL = "%Y-%m-%dT%H:%M:%S%.6f"  # local wall time: same precision, no zone designator
S4_SPEC_VERSION = "1.0.0"

_ARROW_TYPES: dict[str, pa.DataType] = {
    "Utf8": pa.string(),
    "Int64": pa.int64(),
    "UInt64": pa.uint64(),
    "Float64": pa.float64(),
    "Boolean": pa.bool_(),
}
_POLARS_TYPES: dict[str, Any] = {
    "Utf8": pl.String,
    "Int64": pl.Int64,
    "UInt64": pl.UInt64,
    "Float64": pl.Float64,
    "Boolean": pl.Boolean,
}

# Fixed writer options: with the same library versions the same table gives the same bytes. Column
# statistics are off as in the engine's 6B writer (they are not needed: readers sort by ts anyway).
_PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": False,
    "row_group_size": 128 * 1024,
    "version": "2.6",
    "data_page_version": "1.0",
    "store_schema": True,
}


def arrow_schema(spec: OutputSpec) -> pa.Schema:
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.type], nullable=c.nullable) for c in spec.columns])


def _utc(us: np.ndarray[Any, Any]) -> pl.Series:
    return pl.Series(us).cast(pl.Datetime("us")).dt.strftime(TS_FORMAT_UTC)


def _local(us: np.ndarray[Any, Any]) -> pl.Series:
    return pl.Series(us).cast(pl.Datetime("us")).dt.strftime(TS_FORMAT_LOCAL)


def _tz_names(codes: np.ndarray[Any, Any]) -> pl.Series:
    return pl.Series(codes.astype(np.int32)).replace_strict(
        list(range(len(TIMEZONES))), list(TIMEZONES), default=None, return_dtype=pl.String
    )


class Frames:
    """Lazily built, shared columns of the world (ts strings are the costly part: format each once)."""

    def __init__(self, world: World, wk: WorldKey) -> None:
        self.w = world
        self.wk = wk
        self.n = len(world.ts_us)
        self._cache: dict[str, pl.Series] = {}

    def col(self, name: str, make: Callable[[], pl.Series]) -> pl.Series:
        if name not in self._cache:
            self._cache[name] = make().alias(name)
        return self._cache[name]

    def const(self, name: str, value: str | int, dtype: Any, n: int | None = None) -> pl.Series:
        return pl.repeat(value, self.n if n is None else n, dtype=dtype, eager=True).alias(name)

    def ts_utc(self) -> pl.Series:
        return self.col("ts_utc", lambda: _utc(self.w.ts_us))

    def response_ts(self) -> pl.Series:
        return self.col("response_ts_utc", lambda: _utc(self.w.response_us))

    def amount(self) -> pl.Series:
        # Float major units = amount_minor / 100 (exactly the double nearest to the decimal amount).
        return self.col("amount", lambda: pl.Series(self.w.amount_minor / 100.0))

    def campaign_id(self) -> pl.Series:
        w = self.w
        return self.col(
            "campaign_id",
            lambda: pl.Series(w.campaign_code).replace_strict(
                list(range(len(w.campaign_ids))), w.campaign_ids, default=None, return_dtype=pl.String
            ),
        )

    def world_columns(self, n: int, seed_dtype: Any) -> dict[str, pl.Series]:
        wk = self.wk
        return {
            "seed": self.const("seed", wk.seed, seed_dtype, n),
            "manifest_fingerprint": self.const("manifest_fingerprint", wk.manifest_fingerprint, pl.String, n),
            "parameter_hash": self.const("parameter_hash", wk.parameter_hash, pl.String, n),
            "scenario_id": self.const("scenario_id", wk.scenario_id, pl.String, n),
        }


def _finish(spec: OutputSpec, cols: dict[str, pl.Series]) -> pl.DataFrame:
    missing = [c.name for c in spec.columns if c.name not in cols]
    if missing:
        raise AssertionError(f"{spec.output_id}: generator has no column for {missing}")
    return pl.DataFrame([cols[c.name].cast(_POLARS_TYPES[c.type]).alias(c.name) for c in spec.columns])


def arrival_events(fr: Frames, spec: OutputSpec, routing_hash: str) -> pl.DataFrame:
    w = fr.w
    virtual = pl.Series(w.is_virtual)
    tz_primary = _tz_names(w.tz_primary)
    tz_oper = _tz_names(w.tz_operational)
    local_primary = _local(w.local_primary_us)
    local_oper = _local(w.local_operational_us)
    null_str = pl.Series([None], dtype=pl.String)
    df_aux = pl.DataFrame({"v": virtual, "tzp": tz_primary, "tzo": tz_oper, "lp": local_primary, "lo": local_oper})
    aux = df_aux.select(
        pl.when(pl.col("v")).then(pl.col("tzp")).otherwise(null_str).alias("tzid_settlement"),
        pl.when(pl.col("v")).then(pl.col("lp")).otherwise(null_str).alias("ts_local_settlement"),
        pl.when(pl.col("v")).then(pl.col("tzo")).otherwise(null_str).alias("tzid_operational"),
        pl.when(pl.col("v")).then(pl.col("lo")).otherwise(null_str).alias("ts_local_operational"),
        pl.when(pl.col("v"))
        .then(pl.lit("virtual_edge"))
        .otherwise(pl.lit("physical_site"))
        .alias("zone_representation"),
        pl.when(pl.col("v")).then(pl.lit("card_not_present")).otherwise(pl.lit("card_present")).alias("channel_group"),
    )
    site = pl.Series(w.site_id)
    edge = pl.Series(w.edge_id)
    cols = {
        **fr.world_columns(fr.n, pl.UInt64),
        "merchant_id": pl.Series(w.merchant_id),
        "bucket_index": pl.Series(w.bucket_index),
        "arrival_seq": pl.Series(w.arrival_seq),
        "ts_utc": fr.ts_utc(),
        "tzid_primary": tz_primary,
        "ts_local_primary": local_primary,
        "site_id": site.set(site == 0, None),
        "edge_id": edge.set(edge == 0, None),
        "routing_universe_hash": fr.const("routing_universe_hash", routing_hash, pl.String),
        "lambda_realised": pl.Series(w.lambda_realised),
        "is_virtual": virtual,
        "s4_spec_version": fr.const("s4_spec_version", S4_SPEC_VERSION, pl.String),
        **{name: aux.get_column(name) for name in aux.columns},
    }
    return _finish(spec, cols)


def arrival_entities(fr: Frames, spec: OutputSpec) -> pl.DataFrame:
    w = fr.w
    cols = {
        **fr.world_columns(fr.n, pl.Int64),
        "arrival_seq": pl.Series(w.arrival_seq),
        "merchant_id": pl.Series(w.merchant_id),
        "ts_utc": fr.ts_utc(),
        "party_id": pl.Series(w.party_id),
        "account_id": pl.Series(w.account_id),
        "instrument_id": pl.Series(w.instrument_id),
        "device_id": pl.Series(w.device_id),
        "ip_id": pl.Series(w.ip_id),
        "session_id": pl.Series(w.session_id),
    }
    return _finish(spec, cols)


def flow_anchor(fr: Frames, spec: OutputSpec, fraud: bool) -> pl.DataFrame:
    w = fr.w
    cols = {
        **fr.world_columns(fr.n, pl.Int64),
        "flow_id": pl.Series(w.flow_id),
        "arrival_seq": pl.Series(w.arrival_seq),
        "merchant_id": pl.Series(w.merchant_id),
        "party_id": pl.Series(w.party_id),
        "account_id": pl.Series(w.account_id),
        "instrument_id": pl.Series(w.instrument_id),
        "device_id": pl.Series(w.device_id),
        "ip_id": pl.Series(w.ip_id),
        "ts_utc": fr.ts_utc(),
        "amount": fr.amount(),
    }
    if fraud:
        cols["fraud_flag"] = pl.Series(w.fraud)
        cols["campaign_id"] = fr.campaign_id()
    df = _finish(spec, cols)
    # Baseline = the same world without the campaigns: legitimate flows only, identical rows.
    return df if fraud else df.filter(pl.Series(~w.fraud))


def event_stream(fr: Frames, spec: OutputSpec, fraud: bool) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(requests, responses) of the batch, each in merchant/arrival order."""
    w = fr.w

    def events(seq: int, kind: str, ts: pl.Series) -> pl.DataFrame:
        cols = {
            **fr.world_columns(fr.n, pl.Int64),
            "flow_id": pl.Series(w.flow_id),
            "event_seq": fr.const("event_seq", seq, pl.Int64),
            "event_type": fr.const("event_type", kind, pl.String),
            "ts_utc": ts.alias("ts_utc"),
            "amount": fr.amount(),
        }
        if fraud:
            cols["fraud_flag"] = pl.Series(w.fraud)
            cols["campaign_id"] = fr.campaign_id()
        df = _finish(spec, cols)
        return df if fraud else df.filter(pl.Series(~w.fraud))

    return events(0, "AUTH_REQUEST", fr.ts_utc()), events(1, "AUTH_RESPONSE", fr.response_ts())


def build_part(fr: Frames, spec: OutputSpec, routing_hash: str) -> pl.DataFrame:
    """One output's rows of one batch, in the engine's file order."""
    fraud = spec.mode == "fraud"
    if spec.role == "traffic":
        requests, responses = event_stream(fr, spec, fraud)
        # Within a batch the engine writes every request before any response.
        return pl.concat([requests, responses])
    if spec.output_id == "arrival_events_5B":
        return arrival_events(fr, spec, routing_hash)
    if spec.output_id == "s1_arrival_entities_6B":
        return arrival_entities(fr, spec)
    return flow_anchor(fr, spec, fraud)


def part_dir(run_root: Path, spec: OutputSpec, tokens: dict[str, str]) -> Path:
    rendered = render_template(spec.path_template, tokens)
    return run_root / Path(rendered).parent


def write_parquet(df: pl.DataFrame, schema: pa.Schema, path: Path) -> int:
    table = df.to_arrow(compat_level=pl.CompatLevel.oldest()).cast(schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, **_PARQUET_OPTIONS)
    return path.stat().st_size


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def catalogue_outputs(catalogue: Catalogue, modes: tuple[str, ...]) -> list[OutputSpec]:
    return [o for o in catalogue.outputs if o.mode == "both" or o.mode in modes]
