"""The same join frames and flow bindings, computed offline with polars from an engine world's files.

One definition with the online side: the output columns are `BINDING_COLUMNS` / `FRAME_COLUMNS`
of `_model` (what `binding_row` / `frame_row` read off the reader's structs), readiness and missing
parts follow the same rule, and a part that appears twice for one key keeps its earliest row (the
stream order online, where the later one is a dead-lettered conflict). Used by the projection test
and by offline jobs (policy fitting) that need each flow's entities and arrival context.

    ae, aen, fa = read_context(engine_run_root, mode="fraud")
    bindings = flow_bindings(ae, aen, fa)
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

import polars as pl

from fraudrt.engine import output_paths, read_run_receipt, read_run_receipt_raw

from ._model import BINDING_COLUMNS, FRAME_COLUMNS

Mode = Literal["fraud", "baseline"]

_KEY: Final = ["merchant_id", "arrival_seq"]
_ARRIVAL: Final = ("is_virtual", "channel_group", "zone_representation", "tzid_primary", "tzid_operational")
_ARRIVAL_TYPES: Final = {"is_virtual": pl.Boolean, "channel_group": pl.String, "zone_representation": pl.String,
                         "tzid_primary": pl.String, "tzid_operational": pl.String}
_ENTITIES: Final = ("party_id", "account_id", "instrument_id", "device_id", "ip_id")
_ANCHOR_OUTPUT: Final = {"fraud": "s3_flow_anchor_with_fraud_6B", "baseline": "s2_flow_anchor_baseline_6B"}


def read_context(engine_run_root: Path | str, mode: Mode,
                 scenario_id: str | None = None) -> tuple[pl.LazyFrame, pl.LazyFrame, pl.LazyFrame]:
    """(arrival_events, arrival_entities, flow_anchors) of a local engine run root, as lazy frames."""
    receipt = read_run_receipt(engine_run_root)
    scenario = scenario_id or read_run_receipt_raw(engine_run_root).get("scenario_ids", [None])[0]
    if not scenario:
        raise ValueError(f"{engine_run_root}: the run receipt names no scenario; pass scenario_id")

    def scan(output_id: str) -> pl.LazyFrame:
        paths = output_paths(engine_run_root, output_id, scenario, receipt=receipt)
        if not paths:
            raise FileNotFoundError(f"{engine_run_root}: no parquet files for {output_id} / {scenario}")
        return pl.scan_parquet(paths)

    return scan("arrival_events_5B"), scan("s1_arrival_entities_6B"), scan(_ANCHOR_OUTPUT[mode])


def _first_per(lf: pl.LazyFrame, key: list[str]) -> pl.LazyFrame:
    # Stream order is event time, then file order (the stream sort's tie-break).
    return lf.with_row_index("_row").sort(["ts_utc", "_row"]).unique(subset=key, keep="first", maintain_order=True)


def _arrival_part(arrival_events: pl.LazyFrame) -> pl.LazyFrame:
    names = arrival_events.collect_schema().names()
    cols = [pl.col("merchant_id").cast(pl.UInt64), pl.col("arrival_seq").cast(pl.Int64),
            pl.col("ts_utc").alias("arrival_ts_utc")]
    # A field the decoder defaults to None when absent is null here too (a real engine's world may lack it).
    cols += [(pl.col(c) if c in names else pl.lit(None)).cast(_ARRIVAL_TYPES[c]).alias(c) for c in _ARRIVAL]
    return _first_per(arrival_events, _KEY).select(*cols, pl.lit(True).alias("_has_arrival"))


def _entities_part(arrival_entities: pl.LazyFrame, prefix: str = "") -> pl.LazyFrame:
    names = arrival_entities.collect_schema().names()
    session = pl.col("session_id") if "session_id" in names else pl.lit(None)
    return _first_per(arrival_entities, _KEY).select(
        pl.col("merchant_id").cast(pl.UInt64), pl.col("arrival_seq").cast(pl.Int64),
        *(pl.col(c).cast(pl.Int64).alias(f"{prefix}{c}") for c in _ENTITIES),
        session.cast(pl.Int64).alias("session_id"), pl.lit(True).alias("_has_entities"))


def _missing(*parts: tuple[str, pl.Expr]) -> pl.Expr:
    """Comma-joined names of the parts whose flag is not true, in `_model.PARTS` order."""
    return pl.concat_str([pl.when(flag.fill_null(False)).then(pl.lit(None)).otherwise(pl.lit(name))
                          for name, flag in parts], separator=",", ignore_nulls=True)


def join_frames(arrival_events: pl.LazyFrame, arrival_entities: pl.LazyFrame,
                flow_anchors: pl.LazyFrame) -> pl.DataFrame:
    """One row per arrival that has at least one part, with `FRAME_COLUMNS`, sorted by key."""
    frames = _arrival_part(arrival_events).join(_entities_part(arrival_entities), on=_KEY, how="full",
                                                coalesce=True)
    flows = (_first_per(flow_anchors, ["flow_id"])
             .select(pl.col("merchant_id").cast(pl.UInt64), pl.col("arrival_seq").cast(pl.Int64),
                     pl.col("flow_id").cast(pl.Int64))
             .group_by(_KEY).agg(pl.col("flow_id").sort().alias("flow_ids")))
    missing = _missing(("arrival_event", pl.col("_has_arrival")), ("arrival_entities", pl.col("_has_entities")))
    out = (frames.join(flows, on=_KEY, how="left")
           .with_columns(missing.alias("missing"),
                         pl.col("flow_ids").fill_null(pl.lit([], dtype=pl.List(pl.Int64))))
           .with_columns(pl.when(pl.col("missing") == "").then(pl.lit("COMPLETE")).otherwise(pl.lit("WAITING"))
                         .alias("readiness")))
    return out.select(FRAME_COLUMNS).sort(_KEY).collect()


def flow_bindings(arrival_events: pl.LazyFrame, arrival_entities: pl.LazyFrame,
                  flow_anchors: pl.LazyFrame) -> pl.DataFrame:
    """One row per flow anchor with `BINDING_COLUMNS`, sorted by flow_id. Ground truth is never selected."""
    anchors = _first_per(flow_anchors, ["flow_id"]).select(
        pl.col("flow_id").cast(pl.Int64), pl.col("merchant_id").cast(pl.UInt64), pl.col("arrival_seq").cast(pl.Int64),
        pl.col("ts_utc"), pl.col("amount").cast(pl.Float64), *(pl.col(c).cast(pl.Int64) for c in _ENTITIES))
    joined = (anchors.join(_arrival_part(arrival_events), on=_KEY, how="left")
              .join(_entities_part(arrival_entities, prefix="frame_"), on=_KEY, how="left"))
    missing = _missing(("arrival_event", pl.col("_has_arrival")), ("arrival_entities", pl.col("_has_entities")))
    out = joined.with_columns(missing.alias("missing")).with_columns(
        pl.when(pl.col("missing") == "").then(pl.lit("COMPLETE")).otherwise(pl.lit("WAITING")).alias("readiness"))
    return out.select(BINDING_COLUMNS).sort("flow_id").collect()


def flow_bindings_from_world(engine_run_root: Path | str, mode: Mode) -> pl.DataFrame:
    return flow_bindings(*read_context(engine_run_root, mode))


def join_frames_from_world(engine_run_root: Path | str, mode: Mode) -> pl.DataFrame:
    return join_frames(*read_context(engine_run_root, mode))
