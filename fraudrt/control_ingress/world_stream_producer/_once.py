"""`fraudrt wsp ready-consumer --once`: read the control stream once, record READYs, stream them, exit.

For operators not running the control_ingress pack. The control stream is tiny (a READY per scenario
run), so it is read from TRIM_HORIZON each time; `wsp_ready_runs` makes everything already streamed a
logged duplicate, and the advisory lock keeps a running pack and this command off the same READY.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

import anyio
import asyncpg
import msgspec

from fraudrt.config import Settings
from fraudrt.control_ingress.scenario_runner import decode_control_message
from fraudrt.runtime import ComponentContext
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import apply_migrations, pack_run_dir

from ._actor import WorldStreamProducer
from ._store import SQL_PACKAGE, record_ready
from ._stream import StreamResult

PACK_ID: Final = "local_parity_control_ingress_v0"
LOG_NAME: Final = "wsp_ready_consumer.log"
log = logging.getLogger("fraudrt.world_stream_producer")


class ReadyConsumerOnceRequest(msgspec.Struct, frozen=True, kw_only=True):
    platform_run_id: str
    max_events_per_output: int | None = None  # None: Settings.wsp.max_events_per_output


class ReadyConsumerOnceResult(msgspec.Struct, frozen=True, kw_only=True):
    records_read: int
    ready_recorded: int
    ready_duplicate: int
    ready_out_of_scope: int
    invalid: int
    streams: list[StreamResult]


async def ready_consumer_once(settings: Settings, request: ReadyConsumerOnceRequest) -> ReadyConsumerOnceResult:
    dsn = settings.postgres.dsn
    if not dsn:
        raise RuntimeError("no Postgres DSN configured")
    path = pack_run_dir(settings, request.platform_run_id, PACK_ID) / "logs" / LOG_NAME
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=6)
    try:
        async with pool.acquire() as conn:
            await apply_migrations(conn, SQL_PACKAGE)
        wsp = WorldStreamProducer(max_events_per_output=request.max_events_per_output)
        ctx = ComponentContext(settings=settings, platform_run_id=request.platform_run_id, pack_id="wsp_once",
                               pool=pool, logger=log, stopping=anyio.Event())
        stream = settings.streams.name("control")
        read = invalid = 0
        async with KinesisBus(settings.kinesis) as bus:
            for shard in await bus.list_shards(stream):
                iterator: str | None = await bus.get_shard_iterator(stream, shard)
                while iterator:
                    got = await bus.get_records(stream, shard, iterator)
                    iterator = got.next_iterator
                    for rec in got.records:
                        read += 1
                        try:
                            message = decode_control_message(rec.data)
                        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                            invalid += 1
                            log.warning("WSP control record %s/%s unreadable: %s", shard, rec.sequence_number, exc)
                            continue
                        async with pool.acquire() as conn:
                            outcome = await record_ready(conn, message, request.platform_run_id, stream=stream,
                                                         shard_id=shard, sequence_number=rec.sequence_number)
                        wsp.note_outcome(outcome, message.message_id, message.payload.platform_run_id)
                    if not got.records and got.millis_behind == 0:
                        break
        streams = await wsp.stream_open_runs(ctx)
        return ReadyConsumerOnceResult(records_read=read, ready_recorded=wsp.ready_recorded,
                                       ready_duplicate=wsp.ready_duplicate, ready_out_of_scope=wsp.ready_out_of_scope,
                                       invalid=invalid, streams=streams)
    finally:
        await pool.close()
        log.removeHandler(handler)
        handler.close()
