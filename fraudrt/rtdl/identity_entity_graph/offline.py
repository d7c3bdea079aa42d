"""The graph and its features computed offline from a world's parquet with polars.

The same definition as the actor (`_definition.py`): the policy fitter trains on these features and
DF decides on the actor's, so a test compares every edge, entity and feature of a world. Nothing
here reads ground truth: the flow anchors are read with the graph's columns only.

    obs = observations(read_flow_anchors(engine_run_root, mode="fraud"))
    edges, entities, features = graph_edges(obs), graph_entities(obs), graph_features_offline(obs)
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

import polars as pl

from fraudrt.engine import output_paths, read_run_receipt_raw

from ._definition import DEFINITION, EDGE_TYPES, HOUR_US, IDENTITY_EDGE_TYPES, Definition

FLOW_ANCHOR_OUTPUTS: Final = {"fraud": "s3_flow_anchor_with_fraud_6B", "baseline": "s2_flow_anchor_baseline_6B"}
# What the graph reads of a flow anchor (never fraud_flag or campaign_id).
ANCHOR_COLUMNS: Final = ("flow_id", "ts_utc", "merchant_id", "arrival_seq", "party_id", "account_id",
                         "instrument_id", "device_id", "ip_id")
_ID_COLUMNS: Final = {"flow_id": "flow_id", "merchant_id": "merchant", "arrival_seq": "arrival_seq",
                      "party_id": "party", "account_id": "account", "instrument_id": "instrument",
                      "device_id": "device", "ip_id": "ip"}
_KIND_COLUMN: Final = {"party": "party", "account": "account", "instrument": "instrument", "device": "device",
                       "ip": "ip", "merchant": "merchant"}


def read_flow_anchors(engine_run_root: str | Path, *, mode: Literal["fraud", "baseline"] = "fraud",
                      scenario_id: str | None = None) -> pl.DataFrame:
    """The flow anchors of a local engine run root (the graph's columns only)."""
    if scenario_id is None:
        scenarios = read_run_receipt_raw(Path(engine_run_root)).get("scenario_ids") or []
        if len(scenarios) != 1:
            raise ValueError(f"the run root has scenarios {scenarios}: name one (scenario_id=...)")
        scenario_id = str(scenarios[0])
    paths = output_paths(engine_run_root, FLOW_ANCHOR_OUTPUTS[mode], scenario_id)
    if not paths:
        raise FileNotFoundError(f"no {FLOW_ANCHOR_OUTPUTS[mode]} parts under {engine_run_root}")
    return pl.scan_parquet(paths).select(ANCHOR_COLUMNS).collect()


def _as_i64(name: str, dtype: pl.DataType) -> pl.Expr:
    # The actor's to_i64: unsigned ids keep their bits (>= 2**63 become negative), others are int64.
    col = pl.col(name)
    return col.reinterpret(signed=True) if dtype == pl.UInt64 else col.cast(pl.Int64, strict=True)


def _ts_us(dtype: pl.DataType) -> pl.Expr:
    col = pl.col("ts_utc")
    if isinstance(dtype, pl.Datetime):
        stamp = col.dt.replace_time_zone("UTC") if dtype.time_zone is None else col
    else:
        stamp = col.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%#z", time_unit="us", time_zone="UTC")
    return stamp.dt.epoch("us")


def observations(anchors: pl.DataFrame) -> pl.DataFrame:
    """One row per flow anchor: flow_id, ts_us and the entity ids as the actor keys them (int64)."""
    schema = anchors.schema
    return anchors.select(
        _ts_us(schema["ts_utc"]).alias("ts_us"),
        *(_as_i64(col, schema[col]).alias(alias) for col, alias in _ID_COLUMNS.items()),
    ).select("flow_id", "ts_us", "merchant", "arrival_seq", "party", "account", "instrument", "device", "ip")


def graph_edges(obs: pl.DataFrame) -> pl.DataFrame:
    """edge_type, src_id, dst_id, first_seen_us, last_seen_us, seen_count."""
    frames = [
        obs.group_by(_KIND_COLUMN[src], _KIND_COLUMN[dst]).agg(
            pl.col("ts_us").min().alias("first_seen_us"), pl.col("ts_us").max().alias("last_seen_us"),
            pl.len().cast(pl.Int64).alias("seen_count"),
        ).select(pl.lit(edge_type).alias("edge_type"), pl.col(_KIND_COLUMN[src]).alias("src_id"),
                 pl.col(_KIND_COLUMN[dst]).alias("dst_id"), "first_seen_us", "last_seen_us", "seen_count")
        for edge_type, src, dst in EDGE_TYPES
    ]
    return pl.concat(frames).sort("edge_type", "src_id", "dst_id")


def graph_entities(obs: pl.DataFrame) -> pl.DataFrame:
    """entity_type, entity_id, first_seen_us, last_seen_us, seen_count."""
    frames = [
        obs.group_by(column).agg(
            pl.col("ts_us").min().alias("first_seen_us"), pl.col("ts_us").max().alias("last_seen_us"),
            pl.len().cast(pl.Int64).alias("seen_count"),
        ).select(pl.lit(kind).alias("entity_type"), pl.col(column).alias("entity_id"), "first_seen_us",
                 "last_seen_us", "seen_count")
        for kind, column in _KIND_COLUMN.items()
    ]
    return pl.concat(frames).sort("entity_type", "entity_id")


def graph_features_offline(obs: pl.DataFrame, definition: Definition = DEFINITION) -> pl.DataFrame:
    """flow_id, ts_us and the six features of every flow (`_definition.py` defines them)."""
    flows = obs.select("flow_id", "ts_us", "party", "account", "instrument", "device", "ip")
    out = flows.select("flow_id", "ts_us")
    for entity, name in (("device", "device_party_count_24h"), ("ip", "ip_party_count_24h")):
        out = out.join(_window_parties(obs, flows, entity, definition).rename({"n": name}), on="flow_id", how="left")
    for entity, name in (("device", "device_new_for_party"), ("ip", "ip_new_for_party")):
        first = obs.group_by("party", entity).agg(pl.col("ts_us").min().alias("first"))
        new = flows.join(first, on=["party", entity]).select(
            "flow_id", (pl.col("first") >= pl.col("ts_us")).alias(name))
        out = out.join(new, on="flow_id", how="left")
    accounts = obs.group_by("account", "instrument").agg(pl.col("ts_us").min().alias("first"))
    shared = (flows.select("flow_id", "ts_us", "instrument").join(accounts, on="instrument")
              .filter(pl.col("first") < pl.col("ts_us"))
              .group_by("flow_id").agg(pl.len().alias("instrument_account_count")))
    out = out.join(shared, on="flow_id", how="left")
    out = out.join(_neighbourhood(obs, flows, definition), on="flow_id", how="left")
    return out.with_columns(
        pl.col("device_party_count_24h", "ip_party_count_24h", "instrument_account_count", "neighbourhood_2hop")
        .fill_null(0).cast(pl.Int64)
    ).sort("flow_id")


def _window_parties(obs: pl.DataFrame, flows: pl.DataFrame, entity: str, definition: Definition) -> pl.DataFrame:
    # Hour presence: (entity, party, hour) -> first time in that hour, as the actor keeps it.
    presence = (obs.with_columns((pl.col("ts_us") // HOUR_US).alias("hour"))
                .group_by(entity, "party", "hour").agg(pl.col("ts_us").min().alias("first")))
    return (flows.select("flow_id", "ts_us", entity).join(presence, on=entity)
            .filter(pl.col("hour") >= pl.col("ts_us") // HOUR_US - definition.window_hours,
                    pl.col("first") < pl.col("ts_us"))
            .group_by("flow_id").agg(pl.col("party").n_unique().clip(upper_bound=definition.distinct_cap).alias("n")))


def _neighbourhood(obs: pl.DataFrame, flows: pl.DataFrame, definition: Definition) -> pl.DataFrame:
    """min(cap, |entities within two hops of the flow's five, before t, themselves excluded|).

    A node with at least cap + 5 neighbours before t puts at least cap entities in reach (at most
    the five seeds are among them), so only each node's first cap + 5 neighbours by first-seen
    time are joined, and a flow that sees a node's (cap + 5)-th is saturated: the joins stay
    bounded by the cap, as the actor's walk is.
    """
    cap = definition.neighbourhood_cap
    keep = cap + 5
    kinds = ("party", "account", "instrument", "device", "ip")
    nodes = pl.concat([obs.select(pl.lit(k).alias("kind"), pl.col(k).alias("key")) for k in kinds]).unique()
    nodes = nodes.sort("kind", "key").with_row_index("node")

    def node_of(kind: str) -> pl.DataFrame:
        return nodes.filter(pl.col("kind") == kind).select(pl.col("key").alias(kind), pl.col("node").alias(f"n_{kind}"))

    ids = obs.select("flow_id", "ts_us", *kinds)
    for kind in kinds:
        ids = ids.join(node_of(kind), on=kind, how="left")
    undirected = []
    for _, src, dst in IDENTITY_EDGE_TYPES:
        first = ids.group_by(f"n_{src}", f"n_{dst}").agg(pl.col("ts_us").min().alias("fs"))
        undirected.append(first.select(pl.col(f"n_{src}").alias("n"), pl.col(f"n_{dst}").alias("b"), "fs"))
        undirected.append(first.select(pl.col(f"n_{dst}").alias("n"), pl.col(f"n_{src}").alias("b"), "fs"))
    adjacency = (pl.concat(undirected).sort("n", "fs", "b")
                 .with_columns(pl.int_range(pl.len()).over("n").alias("rank"))
                 .filter(pl.col("rank") < keep)
                 .with_columns((pl.col("rank") == keep - 1).alias("last")))
    seeds = pl.concat([ids.select("flow_id", "ts_us", pl.col(f"n_{k}").alias("n")) for k in kinds])

    def step(frontier: pl.DataFrame) -> pl.DataFrame:
        return (frontier.join(adjacency, on="n").filter(pl.col("fs") < pl.col("ts_us"))
                .select("flow_id", "ts_us", "b", "last"))

    def saturated(hops: pl.DataFrame) -> pl.DataFrame:
        return hops.filter("last").select("flow_id").unique()

    hop1 = step(seeds)
    reach1 = (hop1.select("flow_id", "ts_us", pl.col("b").alias("n")).unique()
              .join(seeds, on=["flow_id", "n"], how="anti"))
    # Flows already at the cap after one hop need no second (the common case on a shared public ip).
    full = pl.concat([saturated(hop1), reach1.group_by("flow_id").len().filter(pl.col("len") >= cap).select("flow_id")])
    hop2 = step(reach1.join(full, on="flow_id", how="anti"))
    reach = (pl.concat([reach1.select("flow_id", "n"), hop2.select("flow_id", pl.col("b").alias("n"))])
             .unique().join(seeds.select("flow_id", "n"), on=["flow_id", "n"], how="anti")
             .group_by("flow_id").agg(pl.len().alias("reach")))
    capped = pl.concat([full, saturated(hop2)]).unique().with_columns(pl.lit(True).alias("capped"))
    return (flows.select("flow_id").join(reach, on="flow_id", how="left").join(capped, on="flow_id", how="left")
            .select("flow_id", pl.when(pl.col("capped")).then(cap)
                    .otherwise(pl.col("reach").fill_null(0).clip(upper_bound=cap)).alias("neighbourhood_2hop")))
