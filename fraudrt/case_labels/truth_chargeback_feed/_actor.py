"""The simulated chargeback feed (`truth_chargeback_feed`): EXTERNAL labels from the oracle's truth.

THIS COMPONENT READS GROUND TRUTH. It stands in for the outside world that, weeks after a payment,
tells a bank which payments were fraud (chargebacks) and, once the window has closed without one,
which were not. Nothing else in the case plane reads truth, and nothing that decides does.

It reads the run's traffic stream (truth-free decoding: flow id, event type, time) to know which
flows the run carried. Each AUTH_REQUEST's flow is looked up in the world's truth (`_truth.py`) and
selected with probability `feed_fraud_share` if it is fraud (a chargeback comes back), else
`feed_legit_share` (its window closed without one), by a hash of (run, flow id), so a replay
selects the same flows. A selected flow's label: FRAUD_CONFIRMED or LEGIT_CONFIRMED, type
`fraud_disposition`, source EXTERNAL, actor `EXTERNAL::simulated_chargebacks`. A chargeback also
opens a case (`feed_opens_cases`): an EXTERNAL_SIGNAL trigger on the flow's case subject, emitted
with the label, so a fraud the decision let through reaches an investigator. The label is true
of the world from the flow's time (effective_time) and becomes known `feed_delay_seconds` later in
the world's clock (observed_time); it is emitted once the traffic stream's event-time watermark
(the least, over the shards read, of the largest time applied) has passed that moment, so it never
appears before the world could know it. Flows near the end of a stream wait for a watermark that
never comes: their labels are not known yet, as in life. Decided and emitted labels are rows of
`tcf_flows`, written with the checkpoint: a crash neither loses nor repeats one.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import timedelta
from typing import Any, ClassVar, Final

import msgspec

from fraudrt.config import Settings
from fraudrt.contracts import (
    FLOW_SUBJECT,
    CaseSubjectKey,
    EvidenceRef,
    LabelSubjectKey,
    Pins,
    TriggerDetails,
    case_envelope,
    format_ts_utc,
    ls_adapter_case_timeline_event_id,
    make_case_trigger,
    make_label_assertion,
    parse_ts_utc,
)
from fraudrt.rtdl._inputs import AUTH_REQUEST, TrafficEvent, traffic_stream
from fraudrt.runtime import Batch, ComponentContext, InboundRecord, pack_columns, split_sql

from .._base import CountingActor
from .._pins import envelope_pins
from ._truth import Truth, TruthUnavailable, load_truth

PROVIDER: Final = "simulated_chargebacks"
ACTOR_ID: Final = f"EXTERNAL::{PROVIDER}"
NAMESPACE: Final = f"external:{PROVIDER}"
LABEL_TYPE: Final = "fraud_disposition"
PRODUCER: Final = "truth_chargeback_feed"

_FLOW_COLS: Final = split_sql(7, first=2, casts=["bigint", "text", "timestamptz", "timestamptz", "text", "text",
                                                  "jsonb"])
_ADD_FLOWS_SQL: Final = f"""
INSERT INTO tcf_flows (platform_run_id, flow_id, event_id, event_time, due_time, label_value, origin, pins)
SELECT $1, t.* FROM unnest({", ".join(_FLOW_COLS)}) AS t(f, e, et, dt, v, o, p)
    ON CONFLICT DO NOTHING RETURNING flow_id
"""
_WM_COLS: Final = split_sql(2, first=2, casts=["text", "timestamptz"])
_WATERMARK_SQL: Final = f"""
WITH up AS (
    INSERT INTO tcf_watermarks (platform_run_id, shard_id, ts)
    SELECT $1, t.s, t.ts FROM unnest({", ".join(_WM_COLS)}) AS t(s, ts)
        ON CONFLICT (platform_run_id, shard_id) DO UPDATE SET ts = greatest(tcf_watermarks.ts, EXCLUDED.ts)
    RETURNING shard_id, ts)
SELECT min(ts) FROM (SELECT shard_id, ts FROM up
                     UNION ALL SELECT shard_id, ts FROM tcf_watermarks w
                      WHERE w.platform_run_id = $1 AND w.shard_id NOT IN (SELECT shard_id FROM up)) AS all_shards
"""
_RELEASE_SQL: Final = """
UPDATE tcf_flows SET emitted_at = now()
 WHERE (platform_run_id, flow_id) IN (SELECT platform_run_id, flow_id FROM tcf_flows
                                       WHERE platform_run_id = $1 AND emitted_at IS NULL AND due_time <= $2
                                       ORDER BY due_time, flow_id LIMIT $3)
RETURNING flow_id, event_id, event_time, due_time, label_value, origin, pins
"""
_WAITING_SQL: Final = "SELECT count(*) FROM tcf_flows WHERE platform_run_id = $1 AND emitted_at IS NULL"
_RELEASE_LIMIT: Final = 5000
_encode: Final = msgspec.json.Encoder()


class PinnedTraffic(TrafficEvent, frozen=True, kw_only=True):
    manifest_fingerprint: str | None = None
    parameter_hash: str | None = None
    seed: int | None = None
    scenario_id: str | None = None
    run_id: str | None = None


_decoder: Final = msgspec.json.Decoder(PinnedTraffic)


def selected(platform_run_id: str, flow_id: int, share: float) -> bool:
    """Whether the feed labels this flow: a hash of (run, flow) below `share` (a replay agrees)."""
    h = hashlib.sha256(f"truth_chargeback_feed|{platform_run_id}|{flow_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") < share * 2**64


class TruthChargebackFeed(CountingActor):
    name: ClassVar[str] = "truth_chargeback_feed"
    sql_packages: ClassVar[tuple[str, ...]] = ("fraudrt.case_labels", "fraudrt.case_labels.truth_chargeback_feed")
    counter_names: ClassVar[tuple[str, ...]] = ("flows_selected", "labels_emitted", "labels_emitted_fraud_confirmed",
                                                "labels_emitted_legit_confirmed", "cases_opened", "dead_letters")

    def __init__(self) -> None:
        super().__init__()
        self.settings: Settings | None = None
        self.fraud_share = self.legit_share = 0.0
        self.opens_cases = False
        self.delay = timedelta(0)
        self.case_stream = ""
        self.truth: dict[str, Truth] = {}
        self.watermark: str | None = None
        self.waiting = 0

    def subscriptions(self, settings: Settings) -> list[str]:
        return [traffic_stream(settings)]

    async def start(self, ctx: ComponentContext) -> None:
        cfg = ctx.settings.case_labels
        shares = (cfg.feed_fraud_share, cfg.feed_legit_share)
        if not all(0.0 <= share <= 1.0 for share in shares) or cfg.feed_delay_seconds < 0:
            raise ValueError("case_labels.feed_fraud_share and feed_legit_share must be in [0, 1] and "
                             "feed_delay_seconds >= 0")
        await super().start(ctx)
        self.settings = ctx.settings
        self.fraud_share, self.legit_share = shares
        self.opens_cases = cfg.feed_opens_cases
        self.delay = timedelta(seconds=cfg.feed_delay_seconds)
        self.case_stream = ctx.settings.streams.name("case")
        async with ctx.pool.acquire() as conn:
            self.waiting = int(await conn.fetchval(_WAITING_SQL, ctx.platform_run_id))

    async def _truth_for(self, pins: Pins) -> Truth:
        truth = self.truth.get(pins.scenario_run_id)
        if truth is None:
            assert self.settings is not None
            truth = await load_truth(self.settings, pins.platform_run_id, pins.scenario_run_id, pins.scenario_id)
            self.truth[pins.scenario_run_id] = truth
        return truth

    async def handle(self, batch: Batch) -> None:
        counts: Counter[str] = Counter()
        marks: dict[str, str] = {}
        rows: list[tuple[str, ...]] = []
        for record in batch.records:
            row = await self._take(batch, record, counts, marks)
            if row is not None:
                rows.append(row)
        run = batch.platform_run_id
        if rows:
            added = await batch.conn.fetch(_ADD_FLOWS_SQL, run, *pack_columns([list(c) for c in zip(*rows,
                                                                                                   strict=True)]))
            counts["flows_selected"] += len(added)
        if marks:
            wm = await batch.conn.fetchval(_WATERMARK_SQL, run, *pack_columns([list(marks), list(marks.values())]))
            released = await batch.conn.fetch(_RELEASE_SQL, run, wm, _RELEASE_LIMIT)
            for r in released:
                self._emit(batch, r)
                counts[f"labels_emitted_{r['label_value'].lower()}"] += 1
                if self.opens_cases and r["label_value"] == "FRAUD_CONFIRMED":
                    self._open_case(batch, r)
                    counts["cases_opened"] += 1
            counts["labels_emitted"] += len(released)
            batch.notes["watermark"] = format_ts_utc(wm)
            batch.notes["waiting"] = int(await batch.conn.fetchval(_WAITING_SQL, run))
        await self.count(batch, counts)

    async def _take(self, batch: Batch, record: InboundRecord, counts: Counter[str],
                    marks: dict[str, str]) -> tuple[str, ...] | None:
        """A selected AUTH_REQUEST's flow row (truth looked up); every good record moves the watermark."""
        try:
            event = _decoder.decode(record.data)
            ts = format_ts_utc(parse_ts_utc(event.payload.ts_utc))
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            batch.dead_letter(record, f"INVALID_EVENT: {exc}")
            return None
        marks[record.shard_id] = max(marks.get(record.shard_id, ts), ts)
        p = event.payload
        if p.event_type != AUTH_REQUEST:
            return None
        try:
            pins = envelope_pins(event)
        except ValueError as exc:
            batch.dead_letter(record, f"PINS_INVALID: {exc}")
            return None
        try:
            truth = await self._truth_for(pins)
        except TruthUnavailable as exc:
            batch.dead_letter(record, f"TRUTH_UNAVAILABLE: {exc}")
            return None
        if not truth.knows(p.flow_id):
            batch.dead_letter(record, f"FLOW_NOT_IN_TRUTH: flow {p.flow_id} is not in the run's world")
            return None
        fraud = truth.is_fraud(p.flow_id)
        if not selected(batch.platform_run_id, p.flow_id, self.fraud_share if fraud else self.legit_share):
            return None
        value = "FRAUD_CONFIRMED" if fraud else "LEGIT_CONFIRMED"
        due = format_ts_utc(parse_ts_utc(ts) + self.delay)
        return (str(p.flow_id), event.event_id, ts, due, value, f"{record.stream}|{record.shard_id}|"
                f"{record.sequence_number}", _encode.encode(pins).decode())

    def _emit(self, batch: Batch, row: Any) -> None:
        pins = msgspec.json.decode(row["pins"], type=Pins)
        flow_id, event_id = row["flow_id"], row["event_id"]
        stream, shard, seq = row["origin"].split("|")
        label = make_label_assertion(
            case_timeline_event_id=ls_adapter_case_timeline_event_id(
                NAMESPACE, f"{NAMESPACE}:{flow_id}", batch.platform_run_id, event_id, LABEL_TYPE),
            subject=LabelSubjectKey(platform_run_id=batch.platform_run_id, event_id=event_id), pins=pins,
            label_type=LABEL_TYPE, label_value=row["label_value"], effective_time=format_ts_utc(row["event_time"]),
            observed_time=format_ts_utc(row["due_time"]), source_type="EXTERNAL", actor_id=ACTOR_ID,
            evidence_refs=[EvidenceRef(ref_type="EXTERNAL_REF", ref_id=f"{PROVIDER}:{flow_id}"),
                           EvidenceRef(ref_type="EB_ORIGIN_OFFSET", ref_id=f"{shard}:{seq}", ref_scope=stream)],
            label_payload={"provider": PROVIDER, "basis": "simulated from the world's ground truth (fraud_flag)"})
        event_id_out, key, data = case_envelope(label, ts_utc=label.observed_time, producer=PRODUCER,
                                                parent_event_id=event_id)
        batch.emit(self.case_stream, data, partition_key=key, event_id=event_id_out)

    def _open_case(self, batch: Batch, row: Any) -> None:
        """The chargeback's case: an EXTERNAL_SIGNAL trigger on the flow (the subject a decision
        escalation of the same flow uses, so both land in one case)."""
        pins = msgspec.json.decode(row["pins"], type=Pins)
        flow_id, event_id = row["flow_id"], row["event_id"]
        stream, shard, seq = row["origin"].split("|")
        event_time, due = format_ts_utc(row["event_time"]), format_ts_utc(row["due_time"])
        trigger = make_case_trigger(
            trigger_type="EXTERNAL_SIGNAL", source_ref_id=f"{NAMESPACE}:{flow_id}",
            subject=CaseSubjectKey(platform_run_id=batch.platform_run_id, event_class=FLOW_SUBJECT, event_id=event_id),
            pins=pins, observed_time=due,
            evidence_refs=[EvidenceRef(ref_type="EXTERNAL_REF", ref_id=f"{PROVIDER}:{flow_id}"),
                           EvidenceRef(ref_type="EB_ORIGIN_OFFSET", ref_id=f"{shard}:{seq}", ref_scope=stream)],
            details=TriggerDetails(event_time=event_time, source_event_id=event_id, flow_id=int(flow_id),
                                   escalation_reasons=["CHARGEBACK"]))
        event_id_out, key, data = case_envelope(trigger, ts_utc=due, producer=PRODUCER, parent_event_id=event_id)
        batch.emit(self.case_stream, data, partition_key=key, event_id=event_id_out)

    async def after_commit(self, batch: Batch) -> None:
        await super().after_commit(batch)
        if "watermark" in batch.notes:
            self.watermark = batch.notes["watermark"]
            self.waiting = batch.notes["waiting"]

    def metrics(self) -> dict[str, Any]:
        out = super().metrics()
        return {**out, "labels_waiting": self.waiting, "watermark_ts_utc": self.watermark} if out else out

    def health_details(self) -> dict[str, Any]:
        return {"reads_ground_truth": True, "fraud_share": self.fraud_share, "legit_share": self.legit_share,
                "opens_cases": self.opens_cases, "delay_seconds": self.delay.total_seconds(),
                **self.metrics()}
