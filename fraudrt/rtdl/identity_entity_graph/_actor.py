"""The IEG actor: flow anchors in; flows with their graph features, typed edges and watermarks out.

Per batch (one transaction with the checkpoint): decode every anchor (a bad one is dead-lettered
with its reason), take the new ones in (`batch.take_in`: a re-published copy is a no-op), refuse a
second anchor for a known flow id, stage the observations over the committed graph, compute the
features of every flow whose time every shard has passed, and write flows, edges and watermarks
in one statement. The in-memory graph takes the batch only in `after_commit`.

Why only the flow anchor stream: an anchor carries the flow's whole entity tuple and its event
time, and the stream is in event-time order (WSP), so when anchor f is applied every observation
before f already is: f's features are final at once, with no wait on another stream. Traffic
carries no entity, and arrival entities repeat the anchor's tuple for the same arrival.
"""

from __future__ import annotations

import time
from bisect import insort
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import msgspec

from fraudrt.config import Settings
from fraudrt.rtdl._inputs import FLOW_ANCHOR_EVENT_TYPES, flow_anchor_decoder, flow_anchor_stream
from fraudrt.runtime import Actor, Batch, ComponentContext, Findings, InboundRecord
from fraudrt.runtime.bus import KinesisBus

from . import _store
from ._definition import (
    DEFINITION,
    EDGE_TYPES,
    ENTITY_TYPES,
    HOUR_US,
    BadObservation,
    Definition,
    event_time_us,
    format_us,
    graph_version,
    to_i64,
)
from ._graph import KINDS, Features, GraphState, Observation, Staged, node

# Health thresholds an operator of the decision path would set (never widened to make a run green).
LAG_AMBER_MS: Final = 2_000  # DF's decisions are waiting on us well past its latency goal
LAG_RED_MS: Final = 30_000  # DF's join-wait deadlines start to fire
IDLE_AFTER_S: Final = 5.0  # no batch for this long: the stream is idle, not lagging
DEAD_LETTERS_RED: Final = 100
WAITING_STALLED_S: Final = 30.0  # a flow waits for a shard that does not advance


@dataclass
class _Work:
    """What a batch changed, applied to memory in `after_commit` once it is durable."""

    staged: Staged
    watermarks: dict[str, int]
    late: int = 0
    new_waiting: list[Observation] = field(default_factory=list)
    completed: int = 0
    applied: int = 0
    new_edges: dict[str, int] = field(default_factory=dict)
    conflicts: int = 0
    duplicates: int = 0
    rejected: int = 0
    newest_arrival: float = 0.0


class IdentityEntityGraph(Actor):
    name: ClassVar[str] = "identity_entity_graph"
    sql_packages: ClassVar[tuple[str, ...]] = ("fraudrt.rtdl.identity_entity_graph",)
    max_batch: ClassVar[int] = 2000

    def __init__(self, definition: Definition = DEFINITION) -> None:
        self.definition = definition
        self._reset()

    def _reset(self) -> None:
        self.graph = GraphState(self.definition)
        self._run = ""
        self._component = self.name
        self._stream = ""
        self._shards: set[str] = set()
        self._watermarks: dict[str, int] = {}
        self._waiting: list[tuple[int, int, Observation]] = []  # (ts, flow_id, obs), sorted
        self._waiting_since: dict[int, float] = {}
        self._kept_from_hour = -(1 << 62)
        self.flows_applied = 0
        self.edges = dict.fromkeys((e[0] for e in EDGE_TYPES), 0)
        self.duplicates = 0
        self.mismatches = 0
        self.dead_letters = 0
        self.conflicts = 0
        self.late = 0
        self._lag_ms = 0.0
        self._last_commit = 0.0

    def subscriptions(self, settings: Settings) -> list[str]:
        return [flow_anchor_stream(settings)]

    # ------------------------------------------------------------------ start: rebuild from Postgres

    async def start(self, ctx: ComponentContext) -> None:
        self._reset()  # a (re)start rebuilds the graph from what Postgres committed
        self._run = ctx.platform_run_id
        self._component = ctx.component or self.name
        self._stream = flow_anchor_stream(ctx.settings)
        async with KinesisBus(ctx.settings.kinesis) as bus:
            self._shards = set(await bus.list_shards(self._stream))
        async with ctx.pool.acquire() as conn:
            self._watermarks, self.late = await _store.load_watermarks(conn, self._run, self._stream)
            self._shards |= set(self._watermarks)
            for row in await _store.load_identity_edges(conn, self._run):
                _, src, dst = _EDGE_KINDS[row["edge_type"]]
                self.graph.load_edge(node(src, row["src_id"]), node(dst, row["dst_id"]), row["fs"])
            for merchant in await _store.load_merchants(conn, self._run):
                self.graph.load_merchant(merchant)
            self.edges.update(await _store.load_edge_totals(conn, self._run))
            floor = self._floor(self._watermarks)
            if floor is not None:
                self._kept_from_hour = floor // HOUR_US - self.definition.window_hours
            for row in await _store.load_recent_presence(conn, self._run, max(self._kept_from_hour, 0) * HOUR_US):
                hour = row["ts"] // HOUR_US
                for kind, column in ((KINDS["device"], "device_id"), (KINDS["ip"], "ip_id")):
                    self.graph.add_presence(node(kind, row[column]), hour, {row["party_id"]: row["ts"]})
            now = time.time()
            for o in await _store.load_waiting(conn, self._run):
                self._waiting.append((o.ts_us, o.flow_id, o))
                self._waiting_since[o.flow_id] = now
            counts = await _store.load_counts(conn, self._run, self._component)
        self.flows_applied = counts["flows_applied"]
        self.dead_letters = counts["dead_letters"]
        self.mismatches = counts["mismatches"]

    # ------------------------------------------------------------------ handle

    def _observe(self, record: InboundRecord) -> tuple[Observation, str] | str:
        """(observation, ts_utc text for Postgres), or the reason the record cannot be used."""
        try:
            env = flow_anchor_decoder.decode(record.data)
        except msgspec.ValidationError as exc:
            return f"INVALID_FLOW_ANCHOR: {exc}"
        except msgspec.DecodeError as exc:
            return f"UNREADABLE_FLOW_ANCHOR: {exc}"
        if env.event_type not in FLOW_ANCHOR_EVENT_TYPES:
            return f"UNEXPECTED_EVENT_TYPE: {env.event_type!r} on the flow anchor stream"
        p = env.payload
        try:
            ts = event_time_us(p.ts_utc)
            o = Observation(to_i64(p.flow_id), ts, to_i64(p.merchant_id), to_i64(p.arrival_seq), to_i64(p.party_id),
                            to_i64(p.account_id), to_i64(p.instrument_id), to_i64(p.device_id), to_i64(p.ip_id))
        except BadObservation as exc:
            return str(exc)
        # The engine's own shape goes to Postgres as it is; any other zone or precision is re-written.
        text = p.ts_utc if len(p.ts_utc) == 27 and p.ts_utc[-1] == "Z" and p.ts_utc[10] == "T" else format_us(ts)
        return o, text

    def _floor(self, watermarks: dict[str, int]) -> int | None:
        """The time every shard has passed (None until each has delivered): flows at or before it are final."""
        if not self._shards or any(s not in watermarks for s in self._shards):
            return None
        return min(watermarks[s] for s in self._shards)

    async def handle(self, batch: Batch) -> None:
        work = _Work(Staged(), dict(self._watermarks))
        batch.notes["ieg"] = work
        parsed: list[tuple[InboundRecord, Observation, str]] = []
        for record in batch.records:
            work.newest_arrival = max(work.newest_arrival, record.arrival_ts)
            seen = self._observe(record)
            if isinstance(seen, str):
                batch.dead_letter(record, seen)
                work.rejected += 1
            else:
                parsed.append((record, *seen))
        if parsed:
            fresh = await batch.take_in([r for r, _, _ in parsed])
            if len(fresh) != len(parsed):
                keep = {id(r) for r in fresh}
                parsed = [p for p in parsed if id(p[0]) in keep]
        if parsed:
            parsed = await self._refuse_conflicts(batch, parsed, work)
        late_by_shard: dict[str, int] = {}
        moved: set[str] = set()
        for record, o, _ in parsed:
            shard = record.shard_id
            current = work.watermarks.get(shard)
            if current is None or o.ts_us > current:
                work.watermarks[shard] = o.ts_us
                moved.add(shard)
            elif o.ts_us < current:
                late_by_shard[shard] = late_by_shard.get(shard, 0) + 1
                moved.add(shard)
            self.graph.stage(work.staged, o)
        work.late = sum(late_by_shard.values())
        floor = self._floor(work.watermarks)
        flows = _store.FlowRows()
        for record, o, ts_text in parsed:
            final = floor is not None and o.ts_us <= floor
            flows.add(record.event_id or "", ts_text, o, self.graph.features(work.staged, o) if final else None)
            if not final:
                work.new_waiting.append(o)
        work.applied = len(parsed)
        if len(flows) or moved:
            work.new_edges = await _store.apply_batch(
                batch.conn, self._run, self._stream, flows,
                {s: (work.watermarks[s], late_by_shard.get(s, 0)) for s in moved})
        if floor is not None and self._waiting and self._waiting[0][0] <= floor:
            done = []
            for ts, _, o in self._waiting:  # sorted by time: the flows the floor has passed are a prefix
                if ts > floor:
                    break
                done.append((o.flow_id, self.graph.features(work.staged, o)))
            await _store.complete_flows(batch.conn, self._run, done)
            work.completed = len(done)

    async def _refuse_conflicts(self, batch: Batch, parsed: list[tuple[InboundRecord, Observation, str]],
                                work: _Work) -> list[tuple[InboundRecord, Observation, str]]:
        """A flow id anchored twice under different event ids: the first stands, the others are dead-lettered."""
        owner = await _store.known_flows(batch.conn, self._run, [o.flow_id for _, o, _ in parsed])
        out = []
        for record, o, text in parsed:
            first = owner.get(o.flow_id)
            if first is not None and first == record.event_id:
                work.duplicates += 1  # already applied (an inbox row lost with a restored database)
                continue
            if first is not None:
                batch.dead_letter(record, f"FLOW_ID_CONFLICT: flow {o.flow_id} is already anchored by event {first}")
                work.conflicts += 1
                continue
            owner[o.flow_id] = record.event_id or ""
            out.append((record, o, text))
        return out

    async def after_commit(self, batch: Batch) -> None:
        work: _Work | None = batch.notes.get("ieg")
        if work is None:
            return
        self.graph.commit(work.staged)
        self._watermarks = work.watermarks
        self._shards |= set(work.watermarks)
        now = time.time()
        if work.completed:
            for _, flow_id, _ in self._waiting[:work.completed]:
                self._waiting_since.pop(flow_id, None)
            del self._waiting[:work.completed]
        for o in work.new_waiting:
            insort(self._waiting, (o.ts_us, o.flow_id, o))
            self._waiting_since[o.flow_id] = now
        floor = self._floor(self._watermarks)
        if floor is not None:
            keep_from = floor // HOUR_US - self.definition.window_hours
            if keep_from > self._kept_from_hour:
                self.graph.prune_hours(keep_from)
                self._kept_from_hour = keep_from
        self.flows_applied += work.applied
        for edge_type, n in work.new_edges.items():
            self.edges[edge_type] += n
        self.duplicates += batch.duplicates + work.duplicates
        self.mismatches += batch.mismatches
        self.dead_letters += work.rejected + work.conflicts
        self.conflicts += work.conflicts
        self.late += work.late
        if work.newest_arrival:
            self._lag_ms = max(0.0, (now - work.newest_arrival) * 1000.0)
        self._last_commit = now

    # ------------------------------------------------------------------ health and metrics

    def lag_ms(self) -> float:
        """How far behind the bus the last batch was; 0 once nothing has arrived for IDLE_AFTER_S."""
        if not self._last_commit or time.time() - self._last_commit > IDLE_AFTER_S:
            return 0.0
        return self._lag_ms

    def watermark_us(self) -> int | None:
        return self._floor(self._watermarks)

    def health(self) -> tuple[str, list[str]]:
        found = Findings()
        lag = self.lag_ms()
        found.ladder(lag, LAG_AMBER_MS, LAG_RED_MS,
                     f"CONSUMER_LAG: {lag:.0f} ms behind the flow anchor stream (amber at {LAG_AMBER_MS})",
                     red_reason=f"CONSUMER_LAG: {lag:.0f} ms behind the flow anchor stream (red at {LAG_RED_MS})")
        found.ladder(self.dead_letters, 1, DEAD_LETTERS_RED,
                     f"DEAD_LETTERS: {self.dead_letters} flow anchors dead-lettered in this run")
        found.ladder(self.mismatches, 1, None,
                     f"PAYLOAD_MISMATCH: {self.mismatches} event ids re-sent with other content")
        found.ladder(self.late, 1, None, f"OUT_OF_ORDER: {self.late} anchors came in below their shard's watermark; "
                     "features of later flows may have missed them")
        if self._waiting:
            waited = time.time() - self._waiting_since.get(self._waiting[0][1], time.time())
            found.ladder(waited, WAITING_STALLED_S, None,
                         f"WATERMARK_STALLED: {len(self._waiting)} flows wait on a shard that has not "
                         f"advanced for {waited:.0f} s")
        return found.verdict()

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "flows_applied_total": self.flows_applied,
            "flows_waiting": len(self._waiting),
            "duplicates_total": self.duplicates,
            "payload_mismatches_total": self.mismatches,
            "dead_letters_total": self.dead_letters,
            "flow_id_conflicts_total": self.conflicts,
            "out_of_order_total": self.late,
            "consumer_lag_ms": round(self.lag_ms(), 1),
            "edges_total": sum(self.edges.values()),
            "entities_total": sum(self.graph.entities.values()),
        }
        for edge_type, n in self.edges.items():
            out[f"edges_{edge_type}_total"] = n
        for kind in ENTITY_TYPES:
            out[f"entities_{kind}_total"] = self.graph.entities[KINDS[kind]]
        # Strings and None are written as gauges: the event time every shard has passed, as ts_utc.
        wm = self.watermark_us()
        out["applied_watermark_ts_utc"] = format_us(wm) if wm is not None else None
        out["graph_version"] = graph_version(self._run, wm) if wm is not None and self._run else None
        return out

    def health_details(self) -> dict[str, Any]:
        wm = self.watermark_us()
        return {
            "applied_watermark_ts_utc": format_us(wm) if wm is not None else None,
            "shard_watermarks_ts_utc": {s: format_us(w) for s, w in sorted(self._watermarks.items())},
            "graph_version": graph_version(self._run, wm) if wm is not None and self._run else None,
            "definition_digest": self.definition.digest(),
        }


_EDGE_KINDS: Final = {name: (name, KINDS[src], KINDS[dst]) for name, src, dst in EDGE_TYPES}
__all__ = ["Features", "IdentityEntityGraph"]
