"""A pack prunes its published outbox rows once they are past its retention, and loses nothing."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))  # tests.support: imported here and by pack processes

from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import pack_down, pack_up
from tests.support.harness import (
    TEST_PACKS_DIR,
    create_streams,
    kill_pack,
    make_scope,
    open_pool,
    put,
    read_all,
    record,
    wait_for,
)

PACK = "test_retention_v0"
N = 200


async def test_published_rows_are_pruned_after_the_retention_and_every_event_went_out(
        substrate: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDRT_PACKS_DIR", str(TEST_PACKS_DIR))
    scope = make_scope(substrate, tmp_path / "runs", test_packs=True)
    settings, run = scope.settings, scope.run_id
    upstream, downstream = await create_streams(settings, ["traffic_fraud", "rtdl"])
    async with open_pool(settings) as pool, KinesisBus(settings.kinesis) as bus:
        try:
            acks = await put(bus, upstream, [record(run, n=i) for i in range(N)])
            await anyio.to_thread.run_sync(lambda: pack_up(settings, "test_retention", platform_run_id=run,
                                                           env=scope.env))

            async def handled() -> int:
                return int(await pool.fetchval(
                    "SELECT coalesce(sum(records_total), 0) FROM rt_checkpoints "
                    "WHERE actor = 'test_passthrough' AND stream = $1 AND platform_run_id = $2", upstream, run))

            await wait_for(handled, lambda n: n >= N, what=f"{N} records handled")

            async def outbox_rows() -> int:
                return int(await pool.fetchval("SELECT count(*) FROM rt_outbox WHERE owner = $1", PACK))

            await wait_for(outbox_rows, lambda n: n == 0, timeout=30, what="the published rows pruned")
            stopped = await anyio.to_thread.run_sync(lambda: pack_down(settings, "test_retention", timeout=30))
            assert stopped["state"] == "stopped"
        finally:
            kill_pack(settings, PACK)
        carried = Counter(json.loads(r.data)["event_id"] for r in await read_all(bus, downstream))
    # Pruned only after publishing: every upstream event is on the downstream stream.
    assert set(carried) == {a.event_id for a in acks}
