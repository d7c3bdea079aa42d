"""IG processes killed and restarted under load: nothing lost, nothing admitted twice, receipts true.

Two `fraudrt ig serve` processes on one host, each on its own port. Producers push batches that
overlap (each batch repeats the first events of the next) to either IG, retrying the same batch on
a dropped connection, a 503 or a 429 (after Retry-After), as WSP does. At set points of progress one
IG is killed with SIGKILL (mid-push: claims left behind) and restarted on the same port; once it is
stopped with SIGTERM and its successor started on the same port while it still drains. Then:

- no answer was a 500 (nor any other 4xx);
- every event has exactly one admission, ADMITTED, and every answer for it carried that eb_ref;
- every ADMIT receipt object says the eb_ref of its row;
- every event is on the bus, at its row's offset; a second copy only for an admission that was
  re-published by a take-over (publish_attempts > 0), which consumers dedupe;
- no claim is left behind.

FRAUDRT_CHAOS_LONG=1 (nox -s chaos): five times the events, more kills.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from fraudrt.config import Settings, project_root
from fraudrt.control_ingress.ingestion_gate import ig_api_key

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))  # tests.support

from tests.support.harness import wait_for
from tests.support.ig import (
    close_s3_clients,
    free_port,
    get_object,
    new_run_id,
    serve_ig,
    stream_records,
    traffic,
    wait_up,
)

pytestmark = pytest.mark.chaos

LONG = os.environ.get("FRAUDRT_CHAOS_LONG") == "1"
BATCHES = 200 if LONG else 40
BATCH = 100
OVERLAP = 10  # each batch also carries the first events of the next one
PRODUCERS = 4
# Short, so that the other IG's heal takes over a push that is merely slow (a loaded machine):
# the loser must then write no receipt object and commit nothing.
HEAL_LEASE = 1.0
# (progress in batches answered, how the IG goes): kills land while pushes are in flight.
FAULTS = [(int(BATCHES * f), how) for f, how in ((0.15, "kill"), (0.35, "kill"), (0.55, "term"), (0.75, "kill"))]


class Gates:
    """Two IG processes on fixed ports; `fault(i, how)` kills (or terms) one and starts its successor."""

    def __init__(self, settings: Settings, run: str, logs: Path) -> None:
        self.settings = settings
        self.run = run
        self.logs = logs
        self.ports = [free_port(), free_port()]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.key = ig_api_key(settings)
        self.faults: list[str] = []

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    async def start(self, http: aiohttp.ClientSession, i: int) -> None:
        # A successor on the port its predecessor still drains may not bind at first: try again.
        for _ in range(60):
            proc = serve_ig(self.settings, self.run, self.ports[i], {}, log=self.logs / f"ig{i}.log",
                            heal_lease=HEAL_LEASE)
            try:
                await wait_up(http, self.url(i), self.key, proc)
            except AssertionError:
                proc.kill()
                proc.wait()
                await asyncio.sleep(0.5)
                continue
            if i < len(self.procs):
                self.procs[i] = proc
            else:
                self.procs.append(proc)
            return
        raise AssertionError(f"IG {i} did not come back; see {self.logs}")

    async def fault(self, http: aiohttp.ClientSession, i: int, how: str) -> None:
        old = self.procs[i]
        old.send_signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
        if how == "kill":
            old.wait()
        await self.start(http, i)  # after a SIGTERM: while the old one may still drain
        self.faults.append(f"{how} ig{i}")
        if how == "term":
            await asyncio.to_thread(old.wait, 60)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module", autouse=True)
async def _close_s3_clients() -> Any:
    yield
    await close_s3_clients()


async def test_igs_killed_and_restarted_under_load_admit_every_event_once(private_streams: Settings,
                                                                          tmp_path: Path) -> None:
    run = new_run_id()
    events = [traffic(run, i) for i in range(BATCHES * BATCH)]
    batches = [events[k * BATCH:(k + 1) * BATCH + OVERLAP] for k in range(BATCHES)]
    answers: dict[str, list[dict[str, Any]]] = defaultdict(list)  # event_id -> its results
    statuses: Counter[int] = Counter()
    bad: list[tuple[int, str]] = []
    done = 0
    gates = Gates(private_streams, run, tmp_path)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        try:
            for i in range(2):
                await gates.start(http, i)
            queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
            for b in batches:
                queue.put_nowait(b)

            async def producer() -> None:
                nonlocal done
                while not queue.empty():
                    batch = queue.get_nowait()
                    body = json.dumps({"events": batch}).encode()
                    while True:
                        target = gates.url(random.randrange(2))
                        try:
                            async with http.post(f"{target}/v1/ingest/push", data=body,
                                                 headers={"X-IG-Api-Key": gates.key}) as resp:
                                statuses[resp.status] += 1
                                text = await resp.text()
                                if resp.status == 200:
                                    for e, r in zip(batch, json.loads(text)["results"], strict=True):
                                        answers[e["event_id"]].append(r)
                                    done += 1
                                    break
                                if resp.status in (429, 503):
                                    await asyncio.sleep(float(resp.headers.get("Retry-After", "1")) * 0.2)
                                    continue
                                bad.append((resp.status, text[:500]))
                                break
                        except (TimeoutError, aiohttp.ClientError):
                            statuses[0] += 1  # the IG died under the push: retry the same batch
                            await asyncio.sleep(0.1)

            async def chaos() -> None:
                for at, how in FAULTS:
                    while done < at:
                        await asyncio.sleep(0.02)
                    await gates.fault(http, len(gates.faults) % 2, how)

            await asyncio.gather(chaos(), *(producer() for _ in range(PRODUCERS)))
        finally:
            gates.stop()
    print(f"faults: {gates.faults}; answers by status (0 = dropped connection): {dict(statuses)}")
    assert bad == [], bad[:5]
    assert len(gates.faults) == len(FAULTS)

    keys_by_event = {e["event_id"]: e for e in events}
    conn = await asyncpg.connect(private_streams.postgres.dsn)
    try:
        rows = {r["event_id"]: r for r in await conn.fetch(
            "SELECT event_id, dedupe_key, state, eb_offset, receipt_ref, publish_attempts FROM ig_admissions "
            "WHERE platform_run_id = $1", run)}
        assert sorted(rows) == sorted(keys_by_event), "every event admitted, and nothing else"
        assert Counter(r["state"] for r in rows.values()) == {"ADMITTED": len(events)}
        keys = [r["dedupe_key"] for r in rows.values()]

        async def claims_left() -> int:
            return int(await conn.fetchval("SELECT count(*) FROM ig_claims WHERE dedupe_keys && $1::text[]", keys))

        await wait_for(claims_left, lambda n: n == 0, timeout=60, what="every claim released or healed")
    finally:
        await conn.close()

    for event_id, results in answers.items():
        row = rows[event_id]
        assert {r["decision"] for r in results} <= {"ADMIT", "DUPLICATE"}, results
        assert {r["eb_ref"]["offset"] for r in results} == {row["eb_offset"]}, (event_id, results, dict(row))
    assert set(answers) == set(keys_by_event)

    for row in rows.values():
        receipt = await get_object(private_streams, row["receipt_ref"])
        assert receipt["eb_ref"]["offset"] == row["eb_offset"], (dict(row), receipt["eb_ref"])

    on_bus = await stream_records(private_streams, private_streams.streams.name("traffic_fraud"))
    at = {seq: e["event_id"] for seq, e in on_bus}
    copies = Counter(e["event_id"] for _, e in on_bus)
    assert all(at.get(row["eb_offset"]) == event_id for event_id, row in rows.items()), "a row points off the bus"
    assert set(copies) == set(keys_by_event)
    doubled = {eid for eid, n in copies.items() if n > 1}
    unexplained = {eid for eid in doubled if rows[eid]["publish_attempts"] == 0}
    print(f"{len(doubled)} of {len(events)} events on the bus twice or more (re-published after a take-over)")
    assert unexplained == set(), f"{len(unexplained)} duplicates without a re-publish"
