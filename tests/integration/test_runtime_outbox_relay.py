"""The outbox relay on real Postgres and kinesalite: rows Kinesis will never take are parked with
their reason, and everything else flows (issue 10.3)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.runtime._outbox import OutboxRelay
from fraudrt.runtime.bus import KinesisBus
from tests.support.harness import create_streams, make_scope, open_pool, read_all

pytestmark = pytest.mark.integration


async def _row(pool: Any, owner: str, stream: str, data: bytes, key: str = "") -> int:
    return int(await pool.fetchval(
        "INSERT INTO rt_outbox (owner, stream, partition_key, event_id, data) VALUES ($1, $2, $3, $4, $5) "
        "RETURNING id", owner, stream, key or uuid.uuid4().hex, uuid.uuid4().hex, data))


async def test_unpublishable_rows_are_parked_with_their_reason_and_the_rest_flows(
        substrate: Any, settings: Any, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    rtdl, case = await create_streams(scope.settings, ["rtdl", "case"])
    missing = scope.settings.streams.name("not.created.yet")
    owner = f"test_relay_{uuid.uuid4().hex[:8]}"
    async with open_pool(settings) as pool, KinesisBus(settings.kinesis) as bus:
        ids: dict[str, int] = {}
        ids["a1"] = await _row(pool, owner, rtdl, b'{"n":"a1"}', "k1")
        ids["missing"] = await _row(pool, owner, missing, b'{"n":"missing"}')
        ids["too_large"] = await _row(pool, owner, rtdl, b"x" * (1024 * 1024), "k1")
        ids["a2"] = await _row(pool, owner, rtdl, b'{"n":"a2"}', "k1")
        ids["bad_key"] = await _row(pool, owner, rtdl, b'{"n":"bad_key"}', "k" * 300)
        big = [await _row(pool, owner, case, b"y" * 900_000) for _ in range(7)]  # 6.3 MB: two requests
        ids["c1"] = await _row(pool, owner, case, b'{"n":"c1"}', "k1")
        relay = OutboxRelay(pool, bus, owner, park_retry_seconds=3600)
        total = 0
        for _ in range(5):
            published, failed = await relay.publish_once()
            total += published
            assert failed == 0
            if not published:
                break
        assert total == 3 + len(big)
        rows = {r["id"]: r for r in await pool.fetch("SELECT * FROM rt_outbox WHERE owner = $1", owner)}
        for name in ("a1", "a2", "c1"):
            assert rows[ids[name]]["published_at"] is not None and rows[ids[name]]["sequence_number"]
        assert all(rows[i]["published_at"] is not None for i in big)
        assert rows[ids["missing"]]["parked_reason"].startswith("ResourceNotFoundException")
        assert rows[ids["too_large"]]["parked_reason"].startswith("RECORD_TOO_LARGE")
        assert rows[ids["bad_key"]]["parked_reason"].startswith("PARTITION_KEY_INVALID")
        for name in ("missing", "too_large", "bad_key"):
            row = rows[ids[name]]
            assert row["published_at"] is None and row["attempts"] == 1 and row["last_error"]
        # Order per key on the bus: a1 before a2 (the oversized k1 record between them is parked).
        on_rtdl = [r.data for r in await read_all(bus, rtdl)]
        assert on_rtdl == [b'{"n":"a1"}', b'{"n":"a2"}']
        on_case = await read_all(bus, case)
        assert len(on_case) == 8
        status = await relay.refresh_status()
        assert status.pending == 0 and status.parked_now == 3
        state, reasons = relay.health()
        assert state == "AMBER" and "OUTBOX_PARKED: 3" in reasons[0]

        # The missing stream is created: its parked row is tried again and goes out.
        (created,) = await create_streams(scope.settings, ["not.created.yet"])
        assert created == missing
        relay.park_retry_seconds = 0.0
        await relay.refresh_status()
        assert (await relay.publish_once())[0] == 1
        assert [r.data for r in await read_all(bus, missing)] == [b'{"n":"missing"}']
        status = await relay.refresh_status()
        assert status.parked_now == 2
