"""The generated world: layout, schemas, joins, file order, determinism and campaign signatures."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import polars as pl
import pyarrow.parquet as pq
import pytest

from fraudrt.engine import (
    CampaignMix,
    GenerateRequest,
    WorldSummary,
    flow_id,
    generate_world,
    load_catalogue,
    output_paths,
    partition_tokens,
    read_run_receipt,
    read_run_receipt_raw,
)

pytestmark = pytest.mark.unit

N_FLOWS = 4000
FRAUD_RATE = 0.06
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
LOCAL_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}$")
ARROW_NAMES = {"Utf8": "string", "Int64": "int64", "UInt64": "uint64", "Float64": "double", "Boolean": "bool"}
EVENT_OUTPUTS = {
    "s2_event_stream_baseline_6B": "s2_flow_anchor_baseline_6B",
    "s3_event_stream_with_fraud_6B": "s3_flow_anchor_with_fraud_6B",
}


def _request(out: Path, **kw: object) -> GenerateRequest:
    base: dict[str, object] = {
        "out_dir": str(out),
        "seed": 7,
        "n_flows": N_FLOWS,
        "duration_s": 2 * 86400.0,
        "fraud_rate": FRAUD_RATE,
        "n_parts": 3,
        # Spans the US switch to summer time (2026-03-08), and starts off the hour.
        "start_utc": "2026-03-07T12:30:00Z",
    }
    base.update(kw)
    return msgspec.convert(base, GenerateRequest)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> WorldSummary:
    return generate_world(_request(tmp_path_factory.mktemp("world")))


def _root(world: WorldSummary) -> Path:
    return Path(world.engine_run_root)


def _files(world: WorldSummary, output_id: str) -> list[Path]:
    return output_paths(_root(world), output_id, world.scenario_id)


def _read(world: WorldSummary, output_id: str) -> pl.DataFrame:
    frames = [
        pl.read_parquet(p, hive_partitioning=False).with_columns(pl.lit(i).alias("_part"))
        for i, p in enumerate(_files(world, output_id))
    ]
    return pl.concat(frames)


def _ts(col: str) -> pl.Expr:
    return pl.col(col).str.strptime(pl.Datetime("us"), "%Y-%m-%dT%H:%M:%S%.fZ")


# --- layout and schema ------------------------------------------------------------------------------


def test_run_receipt_identifies_the_world(world: WorldSummary) -> None:
    receipt = read_run_receipt(_root(world))
    assert re.fullmatch(r"[0-9a-f]{32}", receipt.run_id)
    assert re.fullmatch(r"[0-9a-f]{64}", receipt.manifest_fingerprint)
    assert re.fullmatch(r"[0-9a-f]{64}", receipt.parameter_hash)
    assert receipt.seed == 7
    assert TS_RE.match(receipt.created_utc)
    assert _root(world).name == receipt.run_id == world.run_id
    raw = read_run_receipt_raw(_root(world))
    assert raw["scenario_ids"] == [world.scenario_id]
    assert sorted(raw["outputs"]) == sorted(load_catalogue().output_ids)


def test_every_output_has_several_parts_in_the_reference_layout(world: WorldSummary) -> None:
    receipt = read_run_receipt(_root(world))
    for spec in load_catalogue().outputs:
        files = _files(world, spec.output_id)
        assert len(files) >= 2, spec.output_id
        assert [f.name for f in files] == [f"part-{i:05d}.parquet" for i in range(len(files))]
        rel = files[0].parent.relative_to(_root(world)).as_posix()
        if spec.output_id == "arrival_events_5B":
            expected = (
                f"data/layer2/5B/arrival_events/seed=7/manifest_fingerprint={receipt.manifest_fingerprint}"
                f"/scenario_id=baseline_v1"
            )
        else:
            expected = (
                f"data/layer3/6B/{spec.output_id}/seed=7/parameter_hash={receipt.parameter_hash}"
                f"/manifest_fingerprint={receipt.manifest_fingerprint}/scenario_id=baseline_v1"
            )
        assert rel == expected
        assert world.part_counts[spec.output_id] == len(files)


def test_schemas_match_the_catalogue_exactly(world: WorldSummary) -> None:
    for spec in load_catalogue().outputs:
        for path in _files(world, spec.output_id):
            schema = pq.read_schema(path)
            assert schema.names == list(spec.column_names), (spec.output_id, path.name)
            for col in spec.columns:
                field = schema.field(col.name)
                assert str(field.type) == ARROW_NAMES[col.type], (spec.output_id, col.name, field.type)
                assert field.nullable == col.nullable, (spec.output_id, col.name)
            meta = pq.ParquetFile(path).metadata
            assert meta.row_group(0).column(0).compression == "ZSTD"


def test_partition_columns_equal_path_tokens(world: WorldSummary) -> None:
    for spec in load_catalogue().outputs:
        for path in _files(world, spec.output_id):
            tokens = partition_tokens(path.relative_to(_root(world)))
            assert sorted(tokens) == sorted(spec.partitions)
            df = pl.read_parquet(path, hive_partitioning=False)
            for key, value in tokens.items():
                assert df.get_column(key).cast(pl.String).unique().to_list() == [value], (spec.output_id, key)


def test_timestamps_are_rfc3339_with_six_digits(world: WorldSummary) -> None:
    for spec in load_catalogue().outputs:
        df = _read(world, spec.output_id)
        assert df.get_column("ts_utc").str.contains(TS_RE.pattern).all(), spec.output_id
    arrivals = _read(world, "arrival_events_5B")
    assert arrivals.get_column("ts_local_primary").str.contains(LOCAL_RE.pattern).all()
    virtual = arrivals.filter(pl.col("is_virtual"))
    physical = arrivals.filter(~pl.col("is_virtual"))
    assert virtual.height and physical.height
    assert (
        virtual.get_column("edge_id").null_count() == 0 and virtual.get_column("site_id").null_count() == virtual.height
    )
    assert physical.get_column("site_id").null_count() == 0
    assert physical.get_column("tzid_operational").null_count() == physical.height
    assert virtual.get_column("ts_local_operational").str.contains(LOCAL_RE.pattern).all()


def test_local_time_is_the_zone_wall_clock(world: WorldSummary) -> None:
    arrivals = _read(world, "arrival_events_5B")
    cols = ["ts_utc", "tzid_primary", "ts_local_primary", "tzid_operational", "ts_local_operational"]
    offsets = set()
    for ts, tz, local, tz_op, local_op in arrivals.select(cols).iter_rows():
        utc = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        assert utc.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%dT%H:%M:%S.%f") == local
        if tz_op is not None:
            assert utc.astimezone(ZoneInfo(tz_op)).strftime("%Y-%m-%dT%H:%M:%S.%f") == local_op
        if tz == "America/New_York":
            offsets.add(utc.astimezone(ZoneInfo(tz)).utcoffset())
    assert len(offsets) == 2  # both sides of the DST switch were checked


def test_row_counts(world: WorldSummary) -> None:
    n_fraud = round(N_FLOWS * FRAUD_RATE)
    counts = {spec.output_id: _read(world, spec.output_id).height for spec in load_catalogue().outputs}
    assert counts == world.row_counts
    assert counts["arrival_events_5B"] == counts["s1_arrival_entities_6B"] == N_FLOWS
    assert counts["s3_flow_anchor_with_fraud_6B"] == N_FLOWS
    assert counts["s3_event_stream_with_fraud_6B"] == 2 * N_FLOWS
    assert counts["s2_flow_anchor_baseline_6B"] == N_FLOWS - n_fraud
    assert counts["s2_event_stream_baseline_6B"] == 2 * (N_FLOWS - n_fraud)
    assert world.n_fraud_flows == n_fraud


# --- joins ----------------------------------------------------------------------------------------


def test_flow_ids_follow_the_recipe(world: WorldSummary) -> None:
    anchors = _read(world, "s3_flow_anchor_with_fraud_6B")
    ids = anchors.get_column("flow_id")
    assert ids.n_unique() == anchors.height
    assert ids.min() >= 1  # type: ignore[operator]
    for fid, mid, seq in anchors.select("flow_id", "merchant_id", "arrival_seq").head(50).iter_rows():
        assert fid == flow_id(world.manifest_fingerprint, world.parameter_hash, 7, "baseline_v1", mid, seq)


@pytest.mark.parametrize("events_id", sorted(EVENT_OUTPUTS))
def test_event_streams_join_their_anchors(world: WorldSummary, events_id: str) -> None:
    events = _read(world, events_id)
    anchors = _read(world, EVENT_OUTPUTS[events_id])
    assert events.join(anchors, on="flow_id", how="anti").height == 0
    assert anchors.join(events, on="flow_id", how="anti").height == 0
    per_flow = events.group_by("flow_id").agg(pl.col("event_seq").sort().alias("seqs"))
    assert per_flow.get_column("seqs").to_list() == [[0, 1]] * anchors.height
    assert events.filter(pl.col("event_seq") == 0).get_column("event_type").unique().to_list() == ["AUTH_REQUEST"]
    assert events.filter(pl.col("event_seq") == 1).get_column("event_type").unique().to_list() == ["AUTH_RESPONSE"]
    req = events.filter(pl.col("event_seq") == 0).select("flow_id", pl.col("ts_utc").alias("req"), "amount")
    resp = events.filter(pl.col("event_seq") == 1).select("flow_id", pl.col("ts_utc").alias("resp"))
    joined = anchors.select("flow_id", "ts_utc", pl.col("amount").alias("anchor_amount")).join(req, on="flow_id")
    joined = joined.join(resp, on="flow_id")
    assert (joined.get_column("req") == joined.get_column("ts_utc")).all()  # request at the anchor instant
    assert (joined.get_column("amount") == joined.get_column("anchor_amount")).all()
    later = joined.select((_ts("resp") > _ts("req")).alias("later")).get_column("later")
    assert later.all()


@pytest.mark.parametrize("anchor_id", sorted(EVENT_OUTPUTS.values()))
def test_anchors_join_arrivals_and_entities(world: WorldSummary, anchor_id: str) -> None:
    anchors = _read(world, anchor_id)
    arrivals = _read(world, "arrival_events_5B")
    entities = _read(world, "s1_arrival_entities_6B")
    keys = ["seed", "manifest_fingerprint", "scenario_id", "merchant_id", "arrival_seq"]
    arrivals = arrivals.with_columns(pl.col("seed").cast(pl.Int64))  # 5B types seed as UInt64
    assert anchors.join(arrivals, on=keys, how="anti").height == 0
    assert anchors.join(entities, on=keys, how="anti").height == 0
    assert arrivals.join(entities, on=keys, how="anti").height == 0
    assert entities.join(arrivals, on=keys, how="anti").height == 0
    # The same arrival carries the same instant and the same entities everywhere.
    ent_cols = ["party_id", "account_id", "instrument_id", "device_id", "ip_id"]
    both = anchors.join(entities, on=keys, suffix="_s1")
    for col in ["ts_utc", *ent_cols]:
        assert (both.get_column(col) == both.get_column(f"{col}_s1")).all(), col
    assert (
        (anchors.join(arrivals, on=keys, suffix="_5b").select(pl.col("ts_utc") == pl.col("ts_utc_5b")))
        .to_series()
        .all()
    )


def test_baseline_is_the_same_world_without_campaigns(world: WorldSummary) -> None:
    fraud = _read(world, "s3_flow_anchor_with_fraud_6B")
    base = _read(world, "s2_flow_anchor_baseline_6B")
    assert "fraud_flag" not in base.columns and "campaign_id" not in base.columns
    legit = fraud.filter(~pl.col("fraud_flag")).drop("fraud_flag", "campaign_id", "_part").sort("flow_id")
    assert base.drop("_part").sort("flow_id").equals(legit)
    ev_f = _read(world, "s3_event_stream_with_fraud_6B").filter(~pl.col("fraud_flag"))
    ev_b = _read(world, "s2_event_stream_baseline_6B")
    cols = [c for c in ev_b.columns if c != "_part"]
    assert ev_b.select(cols).sort("flow_id", "event_seq").equals(ev_f.select(cols).sort("flow_id", "event_seq"))


def test_arrival_seq_is_per_merchant_in_time_order(world: WorldSummary) -> None:
    arrivals = _read(world, "arrival_events_5B").sort("merchant_id", "arrival_seq")
    per = arrivals.group_by("merchant_id").agg(
        pl.col("arrival_seq").min().alias("lo"), pl.col("arrival_seq").max().alias("hi"), pl.len().alias("n")
    )
    assert (per.get_column("lo") == 1).all()
    assert (per.get_column("hi") == per.get_column("n")).all()
    order_ok = arrivals.select(
        ((pl.col("ts_utc") >= pl.col("ts_utc").shift(1)) | (pl.col("merchant_id") != pl.col("merchant_id").shift(1)))
        .fill_null(True)
        .all()
    ).item()
    assert order_ok


# --- file order -----------------------------------------------------------------------------------


def test_files_are_in_engine_order_not_time_order(world: WorldSummary) -> None:
    for spec in load_catalogue().outputs:
        unsorted_parts = 0
        for path in _files(world, spec.output_id):
            df = pl.read_parquet(path, hive_partitioning=False)
            ts = df.get_column("ts_utc")
            if not ts.equals(ts.sort()):
                unsorted_parts += 1
            if spec.role == "traffic":
                # Requests first, then responses, each in merchant/arrival order within the batch.
                seq = df.get_column("event_seq")
                assert seq.equals(seq.sort()), path
            else:
                key = df.select("merchant_id", "arrival_seq")
                assert key.equals(key.sort("merchant_id", "arrival_seq")), path
        assert unsorted_parts == len(_files(world, spec.output_id)), spec.output_id


def test_a_merchant_lives_in_one_part(world: WorldSummary) -> None:
    df = _read(world, "s3_flow_anchor_with_fraud_6B")
    assert df.group_by("merchant_id").agg(pl.col("_part").n_unique()).get_column("_part").max() == 1


# --- a believable world ------------------------------------------------------------------------------


def test_merchants_have_hourly_rhythm_and_own_amounts(world: WorldSummary) -> None:
    arrivals = _read(world, "arrival_events_5B")
    anchors = _read(world, "s3_flow_anchor_with_fraud_6B").filter(~pl.col("fraud_flag"))
    by_hour = arrivals.group_by(pl.col("ts_local_primary").str.slice(11, 2).alias("h")).len()
    assert by_hour.get_column("len").max() > 4 * by_hour.get_column("len").min()  # type: ignore[operator]
    per_merchant = anchors.group_by("merchant_id").agg(pl.col("amount").median().alias("m"), pl.len())
    busy = per_merchant.filter(pl.col("len") >= 30).get_column("m")
    assert busy.max() > 5 * busy.min()  # type: ignore[operator]
    assert arrivals.get_column("lambda_realised").min() > 0  # type: ignore[operator]


def test_legitimate_devices_belong_to_one_party(world: WorldSummary) -> None:
    legit = _read(world, "s3_flow_anchor_with_fraud_6B").filter(~pl.col("fraud_flag"))
    assert legit.group_by("device_id").agg(pl.col("party_id").n_unique()).get_column("party_id").max() == 1
    assert legit.get_column("party_id").n_unique() > 100


def _campaigns(world: WorldSummary, kind: str) -> pl.DataFrame:
    anchors = _read(world, "s3_flow_anchor_with_fraud_6B")
    return anchors.filter(pl.col("campaign_id").str.starts_with(f"{kind}_"))


def test_fraud_ground_truth(world: WorldSummary) -> None:
    anchors = _read(world, "s3_flow_anchor_with_fraud_6B")
    fraud = anchors.filter(pl.col("fraud_flag"))
    assert fraud.height == world.n_fraud_flows
    assert fraud.get_column("campaign_id").null_count() == 0
    assert anchors.filter(~pl.col("fraud_flag")).get_column("campaign_id").null_count() == N_FLOWS - fraud.height
    kinds = set(fraud.get_column("campaign_id").str.replace(r"_\d+$", "").unique().to_list())
    assert kinds == {"card_testing", "account_takeover", "mule_ring"}
    assert sum(world.campaigns.values()) == fraud.get_column("campaign_id").n_unique()


def test_card_testing_signature(world: WorldSummary) -> None:
    ct = _campaigns(world, "card_testing")
    per = ct.group_by("campaign_id").agg(
        pl.col("instrument_id").n_unique().alias("instruments"),
        pl.len().alias("attempts"),
        pl.col("amount").max().alias("max_amount"),
        ((_ts("ts_utc").max() - _ts("ts_utc").min()).dt.total_seconds()).alias("span_s"),
        pl.col("merchant_id").n_unique().alias("merchants"),
    )
    assert (per.get_column("instruments") == 1).all()
    assert (per.get_column("max_amount") < 3.0).all()
    assert (per.get_column("attempts") >= 10).all()
    assert (per.get_column("span_s") < 3600).all()  # a burst, not a pattern spread over days
    assert (per.get_column("merchants") <= 3).all()
    # No legitimate instrument comes anywhere near that many small charges.
    legit = _read(world, "s3_flow_anchor_with_fraud_6B").filter(~pl.col("fraud_flag") & (pl.col("amount") < 3.0))
    top_legit = legit.group_by("instrument_id").len().get_column("len").max() or 0
    assert top_legit < per.get_column("attempts").min()  # type: ignore[operator]


def test_account_takeover_signature(world: WorldSummary) -> None:
    anchors = _read(world, "s3_flow_anchor_with_fraud_6B")
    legit = anchors.filter(~pl.col("fraud_flag"))
    ato = _campaigns(world, "account_takeover")
    assert ato.group_by("campaign_id").agg(pl.col("party_id").n_unique()).get_column("party_id").max() == 1
    # New device and IP: never used legitimately, by anyone.
    assert ato.join(legit, on="device_id", how="semi").height == 0
    assert ato.join(legit, on="ip_id", how="semi").height == 0
    # Established party: legitimate history before the takeover starts; accounts are the victim's own.
    starts = ato.group_by("campaign_id", "party_id").agg(pl.col("ts_utc").min().alias("start"))
    history = starts.join(legit.select("party_id", "ts_utc", "account_id"), on="party_id")
    before = history.filter(pl.col("ts_utc") < pl.col("start")).group_by("campaign_id").len()
    assert before.height == starts.height
    assert ato.join(legit, on=["party_id", "account_id"], how="anti").height <= ato.height // 4
    assert ato.get_column("amount").median() > 3 * legit.get_column("amount").median()  # type: ignore[operator]


def test_mule_ring_signature(world: WorldSummary) -> None:
    anchors = _read(world, "s3_flow_anchor_with_fraud_6B")
    mules = _campaigns(world, "mule_ring")
    per = mules.group_by("campaign_id").agg(
        pl.col("party_id").n_unique().alias("parties"),
        pl.col("device_id").n_unique().alias("devices"),
        pl.col("ip_id").n_unique().alias("ips"),
    )
    assert (per.get_column("parties") >= 4).all()
    assert (per.get_column("devices") <= 3).all() and (per.get_column("ips") <= 3).all()
    shared = mules.group_by("device_id").agg(pl.col("party_id").n_unique()).get_column("party_id")
    assert shared.max() >= 3  # many parties on one device  # type: ignore[operator]
    # Mules are new parties: they never appear in legitimate traffic.
    assert mules.join(anchors.filter(~pl.col("fraud_flag")), on="party_id", how="semi").height == 0


# --- determinism and options ----------------------------------------------------------------------


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_request_same_bytes(tmp_path: Path, world: WorldSummary) -> None:
    again = generate_world(_request(tmp_path / "again"))
    assert again.run_id == world.run_id
    first, second = _digests(_root(world)), _digests(Path(again.engine_run_root))
    assert len(first) >= 6 * 2 + 7  # six outputs in parts, two gates of three files, the receipt
    assert first == second


def test_other_seed_other_world(tmp_path: Path, world: WorldSummary) -> None:
    other = generate_world(_request(tmp_path / "other", seed=8))
    assert other.run_id != world.run_id and other.parameter_hash == world.parameter_hash
    a = _read(world, "s3_flow_anchor_with_fraud_6B").get_column("flow_id").sort()
    b = (
        pl.concat(
            [
                pl.read_parquet(p, hive_partitioning=False)
                for p in output_paths(other.engine_run_root, "s3_flow_anchor_with_fraud_6B", "baseline_v1")
            ]
        )
        .get_column("flow_id")
        .sort()
    )
    assert not a.equals(b)


def test_existing_root_is_kept_unless_overwrite(tmp_path: Path) -> None:
    req = _request(tmp_path, n_flows=500, n_parts=2)
    first = generate_world(req)
    with pytest.raises(FileExistsError):
        generate_world(req)
    marker = Path(first.engine_run_root) / "stale.txt"
    marker.write_text("x")
    again = generate_world(msgspec.structs.replace(req, overwrite=True))
    assert again.run_id == first.run_id and not marker.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_fraud_mode_only_and_sizing_by_duration(tmp_path: Path) -> None:
    req = _request(tmp_path, n_flows=None, duration_s=300.0, mean_eps=10.0, modes=["fraud"], n_parts=2)
    summary = generate_world(req)
    assert summary.n_flows == 3000
    assert set(summary.row_counts) == {
        "arrival_events_5B",
        "s1_arrival_entities_6B",
        "s3_flow_anchor_with_fraud_6B",
        "s3_event_stream_with_fraud_6B",
    }
    assert summary.min_ts_utc >= "2026-03-07T12:30:00.000000Z"
    assert summary.min_ts_utc < "2026-03-07T12:35:00.000000Z"


def test_campaign_mix_and_no_fraud(tmp_path: Path) -> None:
    only_ct = generate_world(
        _request(
            tmp_path / "ct", n_flows=2000, campaign_mix=CampaignMix(card_testing=1, account_takeover=0, mule_ring=0)
        )
    )
    assert set(only_ct.campaigns) == {"card_testing"}
    clean = generate_world(_request(tmp_path / "clean", n_flows=2000, fraud_rate=0.0))
    assert clean.n_fraud_flows == 0 and clean.campaigns == {}
    assert clean.row_counts["s2_flow_anchor_baseline_6B"] == clean.row_counts["s3_flow_anchor_with_fraud_6B"] == 2000


@pytest.mark.parametrize(
    "bad",
    [
        {"n_flows": None, "duration_s": None},
        {"fraud_rate": 1.0},
        {"n_parts": 0},
        {"scenario_id": "a/b"},
        {"modes": []},
        {"fraud_rate": 0.1, "campaign_mix": {"card_testing": 0, "account_takeover": 0, "mule_ring": 0}},
    ],
)
def test_bad_requests_are_refused(tmp_path: Path, bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        generate_world(_request(tmp_path, **bad))
    assert not any(tmp_path.iterdir())
