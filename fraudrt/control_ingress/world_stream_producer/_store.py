"""WSP's Postgres state: READYs recorded (dedupe and work queue) and per-output checkpoints."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any, Final

import msgspec

from fraudrt.contracts import sha256_hex
from fraudrt.control_ingress.scenario_runner import CONTROL_TOPIC, ControlMessage, ReadyPayload

from ._progress import Position

SQL_PACKAGE: Final = "fraudrt.control_ingress.world_stream_producer"


class ReadyOutcome(Enum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    OUT_OF_SCOPE = "out_of_scope"
    NOT_READY = "not_ready"  # another topic or kind: not for WSP


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    output_id: str
    stream_view_id: str
    oracle_pack_id: str
    position: Position
    emitted: int
    part_uri: str | None = None  # the part at position.part_index (None once past the last part)


async def record_ready(conn: Any, message: ControlMessage, platform_run_id: str, *, stream: str | None = None,
                       shard_id: str | None = None, sequence_number: str | None = None) -> ReadyOutcome:
    """Record a READY of `platform_run_id` once; its message_id seen again is a duplicate."""
    if message.topic != CONTROL_TOPIC or message.attributes.kind not in ("READY", "READY_REEMIT"):
        return ReadyOutcome.NOT_READY
    ready = message.payload
    if ready.platform_run_id != platform_run_id:
        return ReadyOutcome.OUT_OF_SCOPE
    inserted = await conn.fetchval(
        "INSERT INTO wsp_ready_runs (message_id, platform_run_id, scenario_run_id, facts_view_ref, ready, "
        "source_stream, source_shard_id, source_sequence_number) VALUES ($1,$2,$3,$4,$5::jsonb,$6,$7,$8) "
        "ON CONFLICT (message_id) DO NOTHING RETURNING 1",
        ready.message_id, ready.platform_run_id, ready.scenario_run_id, ready.facts_view_ref,
        msgspec.json.encode(ready).decode(), stream, shard_id, sequence_number)
    return ReadyOutcome.RECORDED if inserted else ReadyOutcome.DUPLICATE


async def open_ready_runs(conn: Any, platform_run_id: str) -> list[tuple[str, ReadyPayload, str]]:
    """(message_id, READY, status) of this run's READYs not yet finished, oldest first."""
    rows = await conn.fetch(
        "SELECT message_id, ready::text AS ready, status FROM wsp_ready_runs "
        "WHERE platform_run_id = $1 AND status IN ('PENDING', 'STREAMING') ORDER BY received_at, message_id",
        platform_run_id)
    return [(r["message_id"], msgspec.json.decode(r["ready"], type=ReadyPayload), r["status"]) for r in rows]


async def try_lock_ready(conn: Any, message_id: str) -> bool:
    """Session lock held for the stream's duration, so two WSPs (pack + one-shot) never stream one READY."""
    key = int(sha256_hex("wsp_ready|" + message_id)[:15], 16)
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))


async def unlock_ready(conn: Any, message_id: str) -> None:
    key = int(sha256_hex("wsp_ready|" + message_id)[:15], 16)
    await conn.execute("SELECT pg_advisory_unlock($1)", key)


async def mark_ready(conn: Any, message_id: str, status: str, *, reason: str | None = None,
                     emitted: dict[str, int] | None = None) -> None:
    await conn.execute(
        "UPDATE wsp_ready_runs SET status = $2, reason = $3, emitted = COALESCE($4::jsonb, emitted), "
        "started_at = CASE WHEN $2 = 'STREAMING' THEN COALESCE(started_at, now()) ELSE started_at END, "
        "finished_at = CASE WHEN $2 IN ('STREAMED', 'FAILED') THEN now() ELSE finished_at END, "
        "updated_at = now() WHERE message_id = $1",
        message_id, status, reason, None if emitted is None else msgspec.json.encode(emitted).decode())


async def load_checkpoints(conn: Any, platform_run_id: str, scenario_run_id: str) -> dict[str, Checkpoint]:
    rows = await conn.fetch(
        "SELECT output_id, stream_view_id, oracle_pack_id, part_index, row_index, emitted, part_uri "
        "FROM wsp_checkpoints WHERE platform_run_id = $1 AND scenario_run_id = $2", platform_run_id, scenario_run_id)
    return {r["output_id"]: Checkpoint(output_id=r["output_id"], stream_view_id=r["stream_view_id"],
                                       oracle_pack_id=r["oracle_pack_id"],
                                       position=Position(r["part_index"], r["row_index"]), emitted=r["emitted"],
                                       part_uri=r["part_uri"])
            for r in rows}


async def save_checkpoints(conn: Any, platform_run_id: str, scenario_run_id: str,
                           checkpoints: Sequence[Checkpoint]) -> None:
    """Upsert; the WHERE keeps a slower concurrent writer from moving a checkpoint backwards."""
    await conn.executemany(
        "INSERT INTO wsp_checkpoints (platform_run_id, scenario_run_id, output_id, oracle_pack_id, stream_view_id, "
        "part_index, row_index, emitted, part_uri) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) "
        "ON CONFLICT (platform_run_id, scenario_run_id, output_id) DO UPDATE SET part_index = EXCLUDED.part_index, "
        "row_index = EXCLUDED.row_index, emitted = EXCLUDED.emitted, part_uri = EXCLUDED.part_uri, "
        "updated_at = now() "
        "WHERE wsp_checkpoints.emitted < EXCLUDED.emitted",
        [(platform_run_id, scenario_run_id, c.output_id, c.oracle_pack_id, c.stream_view_id,
          c.position.part_index, c.position.row_index, c.emitted, c.part_uri) for c in checkpoints])
