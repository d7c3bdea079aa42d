"""The decision lane in one process, on the real substrate: a world's envelopes on private streams, the
three projectors (CSFB, OFP, IEG) and the Decision Fabric as a `LocalPack`, and what it decided.

A *replica* is one database (a scratch one, so two replicas can share a platform_run_id and be
compared id for id) plus one stream prefix; `lane(...)` runs the four actors of a replica.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import polars as pl

from fraudrt.config import Settings
from fraudrt.contracts import decode_envelope, decode_payload, lane_event_decoder
from fraudrt.engine import load_catalogue, output_paths, read_run_receipt, read_run_receipt_raw
from fraudrt.rtdl.context_store_flow_binding import ContextStoreFlowBinding
from fraudrt.rtdl.decision_fabric import DecisionFabric, decisions_for
from fraudrt.rtdl.degrade_ladder import set_posture
from fraudrt.rtdl.identity_entity_graph import IdentityEntityGraph
from fraudrt.rtdl.online_feature_plane import OnlineFeaturePlane
from fraudrt.rtdl.policy import load_policy
from fraudrt.runtime import Actor
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import apply_migrations
from tests.support.harness import MIGRATION_PACKAGES, LocalPack, create_streams, new_prefix, put, wait_for
from tests.support.world_bus import WorldPins

LANE_SQL = ("fraudrt.rtdl.context_store_flow_binding", "fraudrt.rtdl.online_feature_plane",
            "fraudrt.rtdl.identity_entity_graph", "fraudrt.rtdl.degrade_ladder", "fraudrt.rtdl.decision_fabric")
CONTEXT = {"arrival_events": "arrival_events_5B", "arrival_entities": "s1_arrival_entities_6B",
           "flow_anchor_fraud": "s3_flow_anchor_with_fraud_6B"}
TRAFFIC = {"traffic_fraud": "s3_event_stream_with_fraud_6B"}
TRUTH_COLUMNS = ("fraud_flag", "campaign_id")
# DF options for tests: the posture is set by hand (no ladder ticking), so its age is not a signal.
TEST_DF_OPTIONS: dict[str, Any] = {"posture_max_age_seconds": 86400.0}


class _Summary(msgspec.Struct, frozen=True):
    engine_run_root: str
    manifest_fingerprint: str
    parameter_hash: str
    seed: int
    scenario_id: str
    run_id: str


def world_rows(root: Path, output_id: str) -> pl.DataFrame:
    """An output's rows in stream order (event time, then primary key), as the stream sort delivers them."""
    scenario = str(read_run_receipt_raw(root)["scenario_ids"][0])
    spec = load_catalogue().output(output_id)
    paths = output_paths(root, output_id, scenario, receipt=read_run_receipt(root))
    df = pl.concat([pl.read_parquet(p) for p in paths])
    return df.sort(["ts_utc", *[c for c in spec.primary_key if c in df.columns]], maintain_order=True)


def shuffle_truth(df: pl.DataFrame, seed: int) -> pl.DataFrame:
    """The same rows with the truth columns permuted (so they no longer belong to their flows)."""
    present = [c for c in TRUTH_COLUMNS if c in df.columns]
    if not present:
        return df
    order = list(range(df.height))
    random.Random(seed).shuffle(order)
    permuted = df.select(present)[order]
    return df.with_columns([permuted[c].alias(c) for c in present])


def world_envelopes(root: Path, run_id: str, *, truth_shuffle_seed: int | None = None,
                    drop_context_of: Iterable[int] = ()) -> dict[str, list[bytes]]:
    """Logical stream -> envelopes of a world for `run_id`; truth optionally shuffled, and the context
    (anchor, arrival, entities) of some flows optionally left out."""
    receipt = read_run_receipt(root)
    summary = _Summary(str(root), receipt.manifest_fingerprint, receipt.parameter_hash, int(receipt.seed),
                       str(read_run_receipt_raw(root)["scenario_ids"][0]), root.name)
    pins = WorldPins(summary, run_id)  # type: ignore[arg-type]
    dropped = set(drop_context_of)
    anchors = world_rows(root, CONTEXT["flow_anchor_fraud"])
    dropped_keys = set(anchors.filter(pl.col("flow_id").is_in(list(dropped)))
                       .select("merchant_id", "arrival_seq").iter_rows())
    out: dict[str, list[bytes]] = {}
    for logical, output in {**CONTEXT, **TRAFFIC}.items():
        rows = anchors if output == CONTEXT["flow_anchor_fraud"] else world_rows(root, output)
        if truth_shuffle_seed is not None:
            rows = shuffle_truth(rows, truth_shuffle_seed)
        if dropped and logical != "traffic_fraud":
            if "flow_id" in rows.columns:
                rows = rows.filter(~pl.col("flow_id").is_in(list(dropped)))
            else:
                keep = [(m, s) not in dropped_keys for m, s in rows.select("merchant_id", "arrival_seq").iter_rows()]
                rows = rows.filter(pl.Series(keep))
        out[logical] = pins.envelopes(output, rows)
    return out


def request_count(envs: dict[str, list[bytes]]) -> int:
    return sum(1 for d in envs["traffic_fraud"] if decode_envelope(d).payload["event_type"] == "AUTH_REQUEST")


@dataclass
class Replica:
    settings: Settings
    pool: Any
    prefix: str

    def stream(self, logical: str) -> str:
        return self.settings.streams.name(logical)


@asynccontextmanager
async def replica(base: Settings, dsn: str | None = None) -> AsyncIterator[Replica]:
    """A stream prefix (streams created) and a pool on `dsn` (default: the session database), migrated."""
    prefix = new_prefix()
    settings = msgspec.structs.replace(
        base, streams=msgspec.structs.replace(base.streams, prefix=prefix),
        postgres=msgspec.structs.replace(base.postgres, dsn=dsn or base.postgres.dsn))
    await create_streams(settings, [*CONTEXT, *TRAFFIC, "rtdl"])
    pool = await asyncpg.create_pool(settings.postgres.dsn, min_size=1, max_size=8, server_settings={"jit": "off"})
    try:
        async with pool.acquire() as conn:
            await apply_migrations(conn, *MIGRATION_PACKAGES, *LANE_SQL)
        yield Replica(settings, pool, prefix)
    finally:
        await pool.close()


async def posture(rep: Replica, run_id: str, mode: str) -> None:
    async with rep.pool.acquire() as conn, conn.transaction():
        await set_posture(conn, run_id, mode, reason=f"TEST:{mode}", policy_digest=load_policy().digest,
                          decided_at=time.time())


def lane(rep: Replica, run_id: str, bus: KinesisBus, df: DecisionFabric | None = None,
         projectors: bool = True) -> LocalPack:
    actors: list[tuple[str, Actor]] = []
    if projectors:
        actors += [("context_store_flow_binding", ContextStoreFlowBinding()),
                   ("online_feature_plane", OnlineFeaturePlane()), ("identity_entity_graph", IdentityEntityGraph())]
    actors.append(("decision_fabric", df or DecisionFabric(TEST_DF_OPTIONS)))
    return LocalPack(rep.settings, actors, run_id, rep.pool, bus, pack_id=f"test_lane_{rep.prefix}")


async def put_context(rep: Replica, bus: KinesisBus, envs: dict[str, list[bytes]]) -> None:
    for logical in CONTEXT:
        await put(bus, rep.stream(logical), envs[logical])


async def put_traffic(rep: Replica, bus: KinesisBus, datas: Sequence[bytes]) -> None:
    await put(bus, rep.stream("traffic_fraud"), datas)


async def wait_decided(rep: Replica, run_id: str, n: int, timeout: float = 180.0) -> list[Any]:
    async def count() -> int:
        return int(await rep.pool.fetchval("SELECT count(*) FROM df_decisions WHERE platform_run_id = $1", run_id))

    await wait_for(count, lambda c: c >= n, timeout=timeout, interval=0.2, what=f"{n} decisions")
    return await decisions_for(rep.pool, run_id)


async def emitted(rep: Replica) -> list[tuple[str, Any, Any]]:
    """(event type, envelope fields, typed payload) of every row DF wrote to the replica's rtdl outbox."""
    rows = await rep.pool.fetch("SELECT data FROM rt_outbox WHERE stream = $1 ORDER BY id", rep.stream("rtdl"))
    out = []
    for r in rows:
        event = lane_event_decoder.decode(bytes(r["data"]))
        out.append((event.event_type, event, decode_payload(event)))
    return out
