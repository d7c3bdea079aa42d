"""The offline computation of OFP's feature vectors, with polars, from a world's parquet.

`fraudrt policy fit` trains on these vectors and the online plane serves the same ones: both read
one `FeatureDefinitions` (keys, windows, bucket, counterparties), and the integration test compares
every online vector with this computation. The algorithm is deliberately *not* the online one (a
second, independent implementation of the definition catches a bug in either):

For a flow f at t in bucket k = t // b and a window of n buckets, an event e of the same key value
counts iff (k - n + 1) * b <= ts_e < t, i.e. iff ts_e < t < E_e with E_e = (k_e + n) * b: each event
*covers* the open interval (ts_e, E_e) of query times. So, per key value,

- count, sum: #/Σ{e : ts_e < t} - #/Σ{e : E_e <= t}, two as-of joins on running totals;
- distinct counterparties: per (key, counterparty) the covering intervals are merged into runs,
  and the count is #{run starts < t} - #{run ends <= t};
- max: the max over the whole buckets [k - n + 1, k - 1] (a rolling max over per-bucket maxima)
  and over the flow's own bucket strictly before t (an exclusive running max by ts).

Amounts are integer minor units (`round(amount * 100)`, half to even, as online).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from fraudrt.engine import output_paths, read_run_receipt, read_run_receipt_raw
from fraudrt.rtdl._inputs import AUTH_REQUEST

from ._definitions import AGGREGATES, ENTITY_FIELDS, FeatureDefinitions, load_definitions

TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.fZ"


def flow_events(requests: pl.DataFrame, anchors: pl.DataFrame) -> pl.DataFrame:
    """The aggregated events: each flow's AUTH_REQUEST (ts, amount) joined with its anchor's entities.

    `requests` has the traffic columns (`flow_id`, `event_type`, `ts_utc`, `amount`; other rows and
    columns are ignored), `anchors` the flow anchor columns. Flows missing either half are left out,
    as online (a flow is aggregated once both halves are in).
    """
    req = requests.filter(pl.col("event_type") == AUTH_REQUEST).select(
        pl.col("flow_id").cast(pl.Int64),
        pl.col("ts_utc").str.to_datetime(TS_FORMAT, time_unit="us", time_zone="UTC").dt.epoch("us").alias("ts_us"),
        (pl.col("amount").cast(pl.Float64) * 100).round(0).cast(pl.Int64).alias("amount_minor"),
        pl.col("ts_utc"),
    )
    anc = anchors.select(pl.col("flow_id").cast(pl.Int64), *(pl.col(f) for f in ENTITY_FIELDS))
    return req.join(anc, on="flow_id", how="inner").sort("ts_us", "flow_id")


def _asof_counts(queries: pl.DataFrame, on: str, marks: pl.DataFrame, mark: str, *, strict: bool,
                 values: list[str], prefix: str) -> pl.DataFrame:
    """Per query row: the running totals `values` of `marks` (per key, by `mark`) at the last mark
    < (strict) or <= the query's `on`; 0 when there is none."""
    grouped = (marks.group_by("key", mark).agg(pl.len().alias("n"), *(pl.col(v).sum() for v in values if v != "n"))
               .sort("key", mark)
               .with_columns(pl.col(c).cum_sum().over("key") for c in values)
               .sort(mark))
    # Both sides sorted by the as-of column (polars cannot check it per `by` group, hence no check).
    joined = queries.sort(on).join_asof(grouped, left_on=on, right_on=mark, by="key", strategy="backward",
                                        allow_exact_matches=not strict, check_sortedness=False)
    return joined.select("flow_id", *(pl.col(v).fill_null(0).alias(f"{prefix}{v}") for v in values))


def _key_window(ev: pl.DataFrame, b: int, n: int) -> pl.DataFrame:
    """flow_id + the four aggregates of one key and one window (n buckets of b µs)."""
    ev = ev.with_columns(((pl.col("k") + n) * b).alias("end"))
    queries = ev.select("flow_id", "key", "ts_us", "k")

    # count and sum: covered iff ts_e < t and not end_e <= t
    before = _asof_counts(queries, "ts_us", ev.rename({"amount_minor": "s"}), "ts_us", strict=True,
                          values=["n", "s"], prefix="b_")
    ended = _asof_counts(queries, "ts_us", ev.rename({"amount_minor": "s"}), "end", strict=False,
                         values=["n", "s"], prefix="e_")

    # distinct counterparties: merged covering intervals per (key, counterparty)
    runs = (ev.select("key", "cp", "ts_us", "end").sort("key", "cp", "ts_us")
            .with_columns(pl.col("end").shift(1).over("key", "cp").alias("prev_end"))
            .with_columns((pl.col("prev_end").is_null() | (pl.col("ts_us") >= pl.col("prev_end")))
                          .cast(pl.Int64).cum_sum().over("key", "cp").alias("run"))
            .group_by("key", "cp", "run").agg(pl.col("ts_us").min().alias("a"), pl.col("end").max().alias("e")))
    started = _asof_counts(queries, "ts_us", runs.rename({"a": "mark"}), "mark",
                           strict=True, values=["n"], prefix="rs_")
    closed = _asof_counts(queries, "ts_us", runs.rename({"e": "mark"}), "mark",
                          strict=False, values=["n"], prefix="re_")

    # max: whole buckets before the own one, then the own bucket strictly before t
    own = (ev.group_by("key", "k", "ts_us").agg(pl.col("amount_minor").max().alias("m")).sort("key", "k", "ts_us")
           .with_columns(pl.col("m").cum_max().shift(1).over("key", "k").alias("own_max")))
    parts = queries.join(own.select("key", "k", "ts_us", "own_max"), on=["key", "k", "ts_us"], how="left")
    if n > 1:
        tiles = ev.group_by("key", "k").agg(pl.col("amount_minor").max().alias("m")).sort("key", "k")
        full = tiles.rolling(index_column="k", period=f"{n - 1}i", closed="left", group_by="key").agg(
            pl.col("m").max().alias("full_max"))
        parts = parts.join(full, on=["key", "k"], how="left")
    else:
        parts = parts.with_columns(pl.lit(None, dtype=pl.Int64).alias("full_max"))

    return (parts.join(before, on="flow_id").join(ended, on="flow_id").join(started, on="flow_id")
            .join(closed, on="flow_id")
            .select("flow_id",
                    (pl.col("b_n") - pl.col("e_n")).alias("count"),
                    (pl.col("b_s") - pl.col("e_s")).alias("amount_sum_minor"),
                    pl.max_horizontal("own_max", "full_max").fill_null(0).alias("amount_max_minor"),
                    (pl.col("rs_n") - pl.col("re_n")).alias("distinct_counterparties")))


def offline_features(events: pl.DataFrame, definitions: FeatureDefinitions | None = None) -> pl.DataFrame:
    """One row per flow of `events` (from `flow_events`): `flow_id`, `ts_utc`, then every feature in
    `definitions.names` order (Int64), each as of the flow's event time, the flow itself excluded."""
    defs = definitions or load_definitions()
    b = defs.bucket_us
    out = events.select("flow_id", "ts_utc").sort("flow_id")
    for key_name, key_i, cp_i in defs.keys:
        ev = events.select("flow_id", "ts_us", "amount_minor",
                           pl.col(ENTITY_FIELDS[key_i]).alias("key"), pl.col(ENTITY_FIELDS[cp_i]).alias("cp"),
                           (pl.col("ts_us") // b).alias("k"))
        for (window_name, _), n in zip(defs.windows, defs.window_buckets, strict=True):
            agg = _key_window(ev, b, n)
            out = out.join(agg.rename({a: f"{key_name}_{window_name}_{a}" for a in AGGREGATES}), on="flow_id",
                           how="left")
    return out.select("flow_id", "ts_utc", *(pl.col(name).cast(pl.Int64) for name in defs.names)).sort("flow_id")


def read_world_events(engine_run_root: Path | str, mode: str = "fraud", scenario_id: str | None = None) -> pl.DataFrame:
    """`flow_events` of a local engine run root (the traffic and flow anchor outputs of `mode`;
    `scenario_id` may be left out when the run root holds one scenario)."""
    root = Path(engine_run_root)
    receipt = read_run_receipt(root)
    if scenario_id is None:
        scenarios = read_run_receipt_raw(root).get("scenario_ids") or []
        if len(scenarios) != 1:
            raise ValueError(f"{root}: name the scenario (the run root holds {scenarios or 'none'})")
        scenario_id = str(scenarios[0])
    traffic, anchor = (("s3_event_stream_with_fraud_6B", "s3_flow_anchor_with_fraud_6B") if mode == "fraud"
                       else ("s2_event_stream_baseline_6B", "s2_flow_anchor_baseline_6B"))

    def read(output_id: str, columns: list[str]) -> pl.DataFrame:
        paths = output_paths(root, output_id, scenario_id, receipt=receipt)
        if not paths:
            raise FileNotFoundError(f"{root}: no files for output {output_id}")
        return pl.concat([pl.read_parquet(p, columns=columns) for p in paths])

    requests = read(traffic, ["flow_id", "event_type", "ts_utc", "amount"])
    anchors = read(anchor, ["flow_id", *ENTITY_FIELDS])
    return flow_events(requests, anchors)
