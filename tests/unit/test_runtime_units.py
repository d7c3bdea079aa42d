"""Pure runtime logic: sequence order, start positions, the pins peek, batching, supervision, manifests, runs.

No substrate: the runner test uses an in-memory stand-in for the asyncpg pool (the real commit path is
covered by tests/integration/test_runtime_actor.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from fraudrt.config import Settings
from fraudrt.runtime import Actor, Batch, ComponentContext, Findings, worst, worst_of
from fraudrt.runtime._checkpoint import is_after
from fraudrt.runtime._manifest import check_components, load_manifest_file, packs_dir
from fraudrt.runtime._reader import Delivery, lowest_checkpoint, to_inbound
from fraudrt.runtime._runner import UNREADABLE_REASON, ActorRunner, _positions
from fraudrt.runtime._supervisor import Supervision, supervise
from fraudrt.runtime.bus import BusRecord, seq_key, shard_number
from fraudrt.runtime.packs import PackError, RunError, active_run_id, new_run, resolve_manifest

pytestmark = pytest.mark.unit

RUN = "platform_20300101T000000Z"
OTHER = "platform_20300101T000001Z"
# Real Kinesis/kinesalite sequence numbers: 56 digits, where text order and numeric order disagree.
SEQ_A = "49680772745685987503886126355624140330612865852103458818"
SEQ_B = "49680772745685987503886126355624140330612865852103458819"
SEQ_LONG = "496807727456859875038861263556241403306128658521034588190"


def _bus_record(seq: str, data: bytes, shard: str = "shardId-000000000000") -> BusRecord:
    return BusRecord("s", shard, seq, "pk", data, 0.0)


def _inbound(seq: str, run: str | None = RUN, shard: str = "shardId-000000000000", **extra: Any) -> Any:
    doc: dict[str, Any] = {"event_id": f"e{seq}", **extra}
    if run is not None:
        doc["platform_run_id"] = run
    return to_inbound(_bus_record(seq, json.dumps(doc).encode(), shard))


# --------------------------------------------------------------------------- sequence numbers


def test_sequence_numbers_compare_as_integers_not_text() -> None:
    assert seq_key("10") > seq_key("9")
    assert seq_key(SEQ_LONG) > seq_key(SEQ_B) > seq_key(SEQ_A)
    assert "9" > "10"  # why: as text the order would be wrong
    assert is_after("10", "9") and not is_after("9", "10")
    assert not is_after(SEQ_A, SEQ_A), "the checkpointed record itself is not after it"
    assert is_after(SEQ_A, None), "no checkpoint: everything is new"


def test_lowest_checkpoint_is_trim_horizon_when_any_subscriber_has_none() -> None:
    assert lowest_checkpoint([]) is None
    assert lowest_checkpoint([SEQ_B, None]) is None
    assert lowest_checkpoint([SEQ_LONG, SEQ_B, SEQ_A]) == SEQ_A
    assert lowest_checkpoint(["100", "99"]) == "99"


def test_shard_number() -> None:
    assert shard_number("shardId-000000000003") == 3
    assert shard_number("shardId-000000000000") == 0


# --------------------------------------------------------------------------- the pins peek


def test_peek_reads_the_run_and_event_id_only() -> None:
    record = to_inbound(_bus_record(SEQ_A, json.dumps(
        {"event_id": "abc", "platform_run_id": RUN, "payload": {"amount": 3}, "anything": [1]}).encode()))
    assert (record.platform_run_id, record.event_id) == (RUN, "abc")
    assert (record.sequence_number, record.shard_id, record.stream) == (SEQ_A, "shardId-000000000000", "s")


def test_peek_falls_back_to_the_payload_pins_of_control_messages() -> None:
    ready = to_inbound(_bus_record(SEQ_A, json.dumps(
        {"message_id": "m1", "payload": {"platform_run_id": RUN}}).encode()))
    assert (ready.platform_run_id, ready.event_id) == (RUN, "m1")


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b'"text"', b"", b'{"platform_run_id": 7}'])
def test_unreadable_records_carry_no_run(data: bytes) -> None:
    record = to_inbound(_bus_record(SEQ_A, data))
    assert record.platform_run_id is None and record.event_id is None
    assert record.data == data


def test_positions_take_the_last_record_and_the_count_per_shard() -> None:
    records = [_inbound("1"), _inbound("2"), _inbound("5", shard="shardId-000000000001"), _inbound("3")]
    assert _positions(records) == {("s", "shardId-000000000000"): ("3", 3),
                                   ("s", "shardId-000000000001"): ("5", 1)}


# --------------------------------------------------------------------------- the runner, in memory


class _Tx:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: Any) -> None:
        return None


class _Conn:
    """Records statements; commits always succeed, reads find nothing (a fresh database)."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, list[Any]]] = []

    def transaction(self) -> _Tx:
        return _Tx()

    async def executemany(self, sql: str, rows: list[Any]) -> None:
        self.statements.append((sql, list(rows)))

    async def execute(self, sql: str, *args: Any) -> str:
        self.statements.append((sql, list(args)))
        return "OK"

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return []

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return None


class _Pool:
    def __init__(self) -> None:
        self.conn = _Conn()

    def acquire(self) -> Any:
        conn = self.conn

        class _Acquire:
            async def __aenter__(self) -> _Conn:
                return conn

            async def __aexit__(self, *exc: Any) -> None:
                return None

        return _Acquire()


class _Collect(Actor):
    name: ClassVar[str] = "collect"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def subscriptions(self, settings: Settings) -> list[str]:
        return ["s"]

    async def handle(self, batch: Batch) -> None:
        self.seen.extend(r.sequence_number for r in batch.records)


def _runner() -> tuple[ActorRunner, _Collect, _Pool]:
    actor, pool = _Collect(), _Pool()
    ctx = ComponentContext(settings=Settings(profile="unit"), platform_run_id=RUN, pack_id="p", pool=pool)
    _send, receive = anyio.create_memory_object_stream[Delivery](max_buffer_size=4)
    return ActorRunner(actor, ctx, receive, None), actor, pool


def _delivery(*records: Any) -> Delivery:
    return Delivery("s", "shardId-000000000000", list(records), 0)


async def test_runner_never_hands_a_record_twice_when_deliveries_overlap() -> None:
    runner, actor, _pool = _runner()
    runner.checkpoints[("s", "shardId-000000000000")] = "2"
    # A reader restart re-delivers a range already queued: 1-2 are committed, 3-4 arrive twice.
    await runner._process([_delivery(_inbound("1"), _inbound("2"), _inbound("3"), _inbound("4")),
                           _delivery(_inbound("3"), _inbound("4"), _inbound("5"))])
    assert actor.seen == ["3", "4", "5"]
    assert runner.stats.skipped_already_committed == 4
    assert runner.checkpoints[("s", "shardId-000000000000")] == "5"
    await runner._process([_delivery(_inbound("4"), _inbound("5"))])
    assert actor.seen == ["3", "4", "5"], "nothing at or before the checkpoint is handled again"


async def test_runner_gates_other_runs_and_dead_letters_unreadable_records() -> None:
    runner, actor, pool = _runner()
    unreadable = to_inbound(_bus_record("3", b"{broken"))
    await runner._process([_delivery(_inbound("1"), _inbound("2", run=OTHER), unreadable, _inbound("4"),
                                     _inbound("5", run=OTHER))])
    assert actor.seen == ["1", "4"]
    assert runner.stats.skipped_other_run == 2
    assert runner.stats.dead_lettered == 1
    assert runner.checkpoints[("s", "shardId-000000000000")] == "5", "the checkpoint passes skipped records"
    dead = [rows for sql, rows in pool.conn.statements if "rt_dead_letters" in sql]
    assert len(dead) == 1 and len(dead[0]) == 1
    row = dead[0][0]
    assert row[3] == "3" and row[6] == UNREADABLE_REASON and row[8] == b"{broken"
    saved = [args for sql, args in pool.conn.statements if "INSERT INTO rt_checkpoints" in sql]
    assert len(saved) == 1 and saved[0][:2] == ["collect", RUN]
    assert saved[0][2:7] == ["s\x1f", "shardId-000000000000\x1f", "5\x1f", "5\x1f", "\x1e\x1f"], \
        "one checkpoint row: shard 0 at seq 5 covering 5 records, no watermark (these records carry no ts_utc)"


async def test_a_runner_that_crashes_mid_batch_reprocesses_what_it_had_in_hand() -> None:
    # The shared reader never re-sends a delivery, so a crash that escapes the runner (here: a bug
    # in the database layer on every commit, dead-letter included) must not drop what it took off the queue.
    actor, pool = _Collect(), _Pool()
    ctx = ComponentContext(settings=Settings(profile="unit"), platform_run_id=RUN, pack_id="p", pool=pool)
    send, receive = anyio.create_memory_object_stream[Delivery](max_buffer_size=4)
    runner = ActorRunner(actor, ctx, receive, None, max_attempts=1)
    original = pool.conn.execute

    async def broken(sql: str, *args: Any) -> str:
        raise KeyError("a bug, not an outage")

    pool.conn.execute = broken  # type: ignore[method-assign]
    await send.send(_delivery(_inbound("1"), _inbound("2")))
    with pytest.raises(KeyError):
        await runner.run()
    assert runner.checkpoints == {}, "nothing was committed"
    pool.conn.execute = original  # type: ignore[method-assign]
    ctx.stopping = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.run)
        with anyio.fail_after(5):
            while runner.checkpoints.get(("s", "shardId-000000000000")) != "2":
                await anyio.sleep(0.01)
        ctx.stopping.set()
    assert actor.seen[-2:] == ["1", "2"]
    assert runner.checkpoints[("s", "shardId-000000000000")] == "2"


async def test_a_dependency_outage_is_waited_out_never_dead_lettered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fraudrt.runtime._runner.random.uniform", lambda a, b: 0.01)
    actor, pool = _Collect(), _Pool()
    ctx = ComponentContext(settings=Settings(profile="unit"), platform_run_id=RUN, pack_id="p", pool=pool)
    _send, receive = anyio.create_memory_object_stream[Delivery](max_buffer_size=4)
    runner = ActorRunner(actor, ctx, receive, None, max_attempts=1)
    original = pool.conn.execute
    failures = [0]

    async def outage(sql: str, *args: Any) -> str:
        if failures[0] < 12:  # far more failures than max_attempts: none of them may count
            failures[0] += 1
            import botocore.exceptions
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        return await original(sql, *args)

    pool.conn.execute = outage  # type: ignore[method-assign]
    with anyio.fail_after(10):
        await runner._process([_delivery(_inbound("1"), _inbound("2"))])
    assert failures[0] == 12
    assert runner.stats.dead_lettered == 0 and runner.stats.batch_failures == 0
    assert runner.stats.dependency_failures == 12
    assert not [sql for sql, _ in pool.conn.statements if "rt_dead_letters" in sql]
    assert runner.checkpoints[("s", "shardId-000000000000")] == "2"
    assert runner.health() == ("GREEN", []), "recovered"


# --------------------------------------------------------------------------- supervision


def test_supervision_turns_amber_then_red_and_recovers_after_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("fraudrt.runtime._supervisor.time.monotonic", lambda: now[0])
    sup = Supervision("x", crash_window=60.0, red_after=3)
    assert sup.health() == ("GREEN", [])
    sup.record_crash(RuntimeError("boom"))
    state, reasons = sup.health()
    assert state == "AMBER" and "boom" in reasons[0]
    sup.record_crash(RuntimeError("boom"))
    sup.record_crash(RuntimeError("bang"))
    state, reasons = sup.health()
    assert state == "RED" and reasons[0].startswith("CRASH_LOOP: 3 crashes") and "bang" in reasons[0]
    now[0] += 61.0
    assert sup.health() == ("GREEN", [])


async def test_supervise_restarts_a_crashing_body_until_it_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fraudrt.runtime._supervisor.random.uniform", lambda a, b: 0.0)
    calls: list[int] = []
    events: list[tuple[str, dict[str, object]]] = []

    async def body() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError(f"crash {len(calls)}")

    sup = Supervision("x")
    with anyio.fail_after(5):
        await supervise(sup, body, anyio.Event(), lambda e, d: events.append((e, d)),
                        __import__("logging").getLogger("test"))
    assert len(calls) == 3 and sup.restarts == 2 and not sup.running
    assert [e for e, _ in events] == ["component_crashed", "component_restarted"] * 2
    assert sup.last_error == "RuntimeError: crash 2"


async def test_supervise_backoff_starts_over_after_a_healthy_period(monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("fraudrt.runtime._supervisor.random.uniform", lambda a, b: 0.0)
    clock = [0.0]
    # The supervisor's clock only (the event loop keeps the real one).
    monkeypatch.setattr("fraudrt.runtime._supervisor.time", __import__("types").SimpleNamespace(
        monotonic=lambda: clock[0]))
    runs = [0.0, 0.0, 0.0, 120.0, 0.0]  # how long each run lasts before it crashes; then it returns

    async def body() -> None:
        if not runs:
            return
        clock[0] += runs.pop(0)
        raise RuntimeError("crash")

    import logging
    caplog.set_level(logging.ERROR, logger="test.backoff")
    with anyio.fail_after(5):
        await supervise(Supervision("x"), body, anyio.Event(), lambda e, d: None, logging.getLogger("test.backoff"))
    delays = [r.getMessage().rsplit(" ", 1)[-1] for r in caplog.records if "restarting in" in r.getMessage()]
    assert delays == ["0.5s", "1.0s", "2.0s", "0.5s", "1.0s"], "the fourth crash came after 120 s of health"


def test_worst_state() -> None:
    assert worst() == "GREEN"
    assert worst("GREEN", "AMBER") == "AMBER"
    assert worst("AMBER", "RED", "GREEN") == "RED"
    assert worst("GREEN", "BOGUS") == "BOGUS", "an unknown state is never better than RED"
    assert worst_of(("AMBER", ["A"]), ("GREEN", []), ("RED", ["R"])) == ("RED", ["A", "R"])


def test_findings_ladder_picks_the_worst_and_keeps_every_reason_in_order() -> None:
    found = Findings()
    assert found.verdict() == ("GREEN", []), "no findings is healthy"
    found.ladder(0.5, 1.0, 2.0, "BELOW_BOTH")
    found.ladder(1.0, 1.0, 2.0, "AT_AMBER")
    found.ladder(5.0, 1.0, None, "NO_RED_BOUND")
    assert found.verdict() == ("AMBER", ["AT_AMBER", "NO_RED_BOUND"]), "a missing RED bound never turns RED"
    found.ladder(2.0, 1.0, 2.0, "SLOW", red_reason="STALLED")
    found.flag("AMBER", "FLAGGED")
    assert found.verdict() == ("RED", ["AT_AMBER", "NO_RED_BOUND", "STALLED", "FLAGGED"])


# --------------------------------------------------------------------------- manifests


def _manifest(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


def test_packs_dir_override_and_resolution_by_id_or_short_name(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _manifest(tmp_path, "x_v0", "pack_id: x_v0\nshort_name: x\ncomponents:\n"
              "  - name: a\n    entry: fraudrt.runtime:Actor\n")
    monkeypatch.setenv("FRAUDRT_PACKS_DIR", str(tmp_path))
    assert packs_dir() == tmp_path.resolve()
    assert resolve_manifest("x").pack_id == "x_v0"
    assert resolve_manifest("x_v0").short_name == "x"
    with pytest.raises(PackError, match=r"unknown pack 'y'; known packs: x \(x_v0\)"):
        resolve_manifest("y")
    monkeypatch.delenv("FRAUDRT_PACKS_DIR")
    assert resolve_manifest("rtdl_core").pack_id == "local_parity_rtdl_core_v0"


def test_check_components_sorts_ready_missing_and_optional(tmp_path: Path) -> None:
    path = _manifest(tmp_path, "m", """
pack_id: m_v0
short_name: m
components:
  - {name: built, entry: "fraudrt.runtime:Actor"}
  - {name: gone, entry: "fraudrt.not_a_module:Gone"}
  - {name: nameless, entry: "fraudrt.runtime:NoSuchClass"}
  - {name: later, entry: "fraudrt.not_a_module_either:Later", optional: true}
""")
    ready, missing, optional = check_components(load_manifest_file(path))
    assert [s.name for s in ready] == ["built"]
    assert [m.split(":")[0] for m in missing] == ["gone", "nameless"]
    assert "fraudrt.not_a_module does not exist yet" in missing[0]
    assert [m.split(":")[0] for m in optional] == ["later"]


def test_manifest_errors_name_the_file(tmp_path: Path) -> None:
    bad = _manifest(tmp_path, "bad", "pack_id: b\nshort_name: b\ncomponents: []\nrunetime: {}\n")
    with pytest.raises(PackError) as err:
        load_manifest_file(bad)
    assert str(bad) in str(err.value) and "runetime" in str(err.value)
    not_component = _manifest(tmp_path, "nc", "pack_id: n\nshort_name: n\ncomponents:\n"
                              "  - {name: f, entry: 'fraudrt.runtime:classify'}\n")
    with pytest.raises(PackError, match="is not an Actor or Service"):
        check_components(load_manifest_file(not_component))


# --------------------------------------------------------------------------- runs


def test_new_run_and_active_run_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLATFORM_RUN_ID", raising=False)
    settings = Settings(profile="unit", runs_root=str(tmp_path))
    with pytest.raises(RunError, match="no active platform run"):
        active_run_id(settings)
    run = new_run(settings, datetime(2030, 2, 3, 4, 5, 6, tzinfo=UTC))
    assert run == "platform_20300203T040506Z"
    assert (tmp_path / "fraud-platform" / run).is_dir()
    assert active_run_id(settings) == run
    monkeypatch.setenv("PLATFORM_RUN_ID", OTHER)
    assert active_run_id(settings) == OTHER, "PLATFORM_RUN_ID wins over the ACTIVE_RUN_ID file"
    monkeypatch.setenv("PLATFORM_RUN_ID", "platform_2030")
    with pytest.raises(RunError, match="PLATFORM_RUN_ID holds 'platform_2030'"):
        active_run_id(settings)


def test_substrate_up_that_fails_half_way_records_what_it_started(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A server started before a later one fails must be in state.json, so `down` can stop it."""
    import sys

    from fraudrt._daemon import free_port, is_alive
    from fraudrt.substrate import SubstrateError, _launcher
    from fraudrt.substrate._services import ServiceSpec

    settings = Settings(profile="unit", home=str(tmp_path))
    port = free_port()

    def pg() -> ServiceSpec:
        return ServiceSpec(name="postgres", argv=[sys.executable, "-c", "import time; time.sleep(60)"],
                           env={}, ports={"postgres": port}, endpoint=f"127.0.0.1:{port}", stop_timeout=2.0)

    def kinesis() -> ServiceSpec:
        raise SubstrateError("Node.js not found on PATH")

    monkeypatch.setattr(_launcher, "_specs", lambda *_a: {"postgres": pg, "kinesis": kinesis, "s3": kinesis})
    with pytest.raises(SubstrateError):
        anyio.run(lambda: _launcher.up(settings))
    state = _launcher.load_state(settings)
    assert "postgres" in state.services
    record = state.services["postgres"].process
    assert is_alive(record)
    _launcher.down(settings)
    assert not is_alive(record)


def test_concurrent_pack_up_starts_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two `pack up` at once: one starts the pack, the other sees it running; never two processes."""
    import sys
    import threading
    import time as _time

    from fraudrt._daemon import spawn_detached, stop
    from fraudrt.runtime import _pack

    _manifest(tmp_path / "packs", "r_v0", "pack_id: r_v0\nshort_name: r\ncomponents:\n"
              "  - name: a\n    entry: fraudrt.runtime:Actor\n")
    monkeypatch.setenv("FRAUDRT_PACKS_DIR", str(tmp_path / "packs"))
    settings = Settings(profile="unit", runs_root=str(tmp_path / "runs"))
    spawned: list[Any] = []

    def slow_spawn(argv: Any, **kw: Any) -> Any:
        _time.sleep(0.3)  # the window in which the other `pack up` looks at state.json
        record = spawn_detached([sys.executable, "-c", "import time; time.sleep(30)"], log_path=kw["log_path"])
        spawned.append(record)
        return record

    monkeypatch.setattr(_pack, "spawn_detached", slow_spawn)
    results: list[Any] = []

    def up() -> None:
        try:
            results.append(_pack.pack_up(settings, "r", wait=1.0, platform_run_id=RUN)["state"])
        except PackError as exc:
            results.append(str(exc)[:30])

    threads = [threading.Thread(target=up) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(spawned) == 1, results
        assert "already-running" in results
    finally:
        for record in spawned:
            stop(record, timeout=2.0)


async def test_a_component_that_returns_before_the_drain_is_red_not_green() -> None:
    async def body() -> None:
        return

    log = __import__("logging").getLogger("test")
    sup = Supervision("svc", must_run=True)
    await supervise(sup, body, anyio.Event(), lambda e, d: None, log)
    state, reasons = sup.health()
    assert not sup.running and state == "RED" and reasons[0].startswith("STOPPED")
    drained, stopping = Supervision("svc", must_run=True), anyio.Event()
    stopping.set()
    await supervise(drained, body, stopping, lambda e, d: None, log)
    assert drained.health() == ("GREEN", [])


def test_put_records_wire_shapes_are_kinesis_json() -> None:
    from fraudrt.runtime._bus import PutEntry, _dec_put, _enc, _PutReq

    body = json.loads(_enc.encode(_PutReq("s", [PutEntry(b"\x00{}", "pk")])))
    assert body == {"StreamName": "s", "Records": [{"Data": "AHt9", "PartitionKey": "pk"}]}
    resp = _dec_put.decode(json.dumps({"FailedRecordCount": 1, "Records": [
        {"SequenceNumber": "495", "ShardId": "shardId-000000000001"},
        {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"}]}))
    ok, failed = resp.Records
    assert ok.ok and (ok.shard_id, ok.sequence_number) == ("shardId-000000000001", "495")
    assert not failed.ok and failed.error_code == "ProvisionedThroughputExceededException"
    assert failed.error_message == "slow down"
