"""What the run reporter keeps of the decision lane: additive counters, folded in once per event.

Every number of the report that depends on the decision lane's events is a sum over events, so the
reporter's state is a map `key -> count` that a batch only adds to (`obs_counts`, one upsert per
batch): reading it costs O(keys), never O(events), and replaying an event is harmless because the
runtime's intake (`take_in`) drops what was folded in before. Keys:

- `decisions`, `decisions.action.<A>`, `decisions.context.<status>`, `decisions.posture.<mode>`;
  `intents`, `intents.kind.<K>`; `outcomes`, `outcomes.status.<S>`; `audits`, `audits.chain.<S>`;
  `case_triggers`; `undecodable.<event_type>` (a payload that breaks its contract);
- `lat.<hop>.b<i>` (bucket i of `LatencyHistogram`), `lat.<hop>.sum_us`: hops `admit_to_decision`,
  `decision_to_outcome`, `admit_to_outcome`, `admit_to_audit`, from the payloads' own timestamps;
- `tp.<stage>.<epoch second>`: admitted / decided / outcome / audited per wall-clock second;
- `q.<truth>.<action>`: decisions by the flow's truth (`legit`, `fraud:<campaign type>`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from fraudrt.contracts import (
    ACTION_INTENT,
    ACTION_OUTCOME,
    AUDIT_RECORD,
    CASE_TRIGGER,
    DECISION_RESPONSE,
    ActionIntentPayload,
    ActionOutcomePayload,
    AuditRecordPayload,
    DecisionPayload,
    decode_payload,
    lane_event_decoder,
    parse_ts_utc,
)
from fraudrt.runtime import LatencyHistogram

HOPS: Final = ("admit_to_decision", "decision_to_outcome", "admit_to_outcome", "admit_to_audit")
STAGES: Final = ("admitted", "decided", "outcome", "audited")


@dataclass
class Folded:
    """One batch's contribution: counter deltas, and decisions whose flow the truth does not know yet."""

    deltas: Counter[str] = field(default_factory=Counter)
    unscored: list[tuple[str, int, str]] = field(default_factory=list)  # (decision_id, flow_id, action)
    rejected: list[tuple[Any, str]] = field(default_factory=list)  # (record, reason)


def _epoch(ts: str) -> float:
    return parse_ts_utc(ts).timestamp()


def _second(ts: str) -> int:
    return int(_epoch(ts))


class _Hops:
    def __init__(self) -> None:
        self.hist = {hop: LatencyHistogram() for hop in HOPS}

    def observe(self, hop: str, ms: float) -> None:
        self.hist[hop].observe(max(0.0, ms))

    def into(self, out: Counter[str]) -> None:
        for hop, h in self.hist.items():
            if not h.total:
                continue
            for i, n in enumerate(h.counts):
                if n:
                    out[f"lat.{hop}.b{i}"] += n
            out[f"lat.{hop}.sum_us"] += round(h.sum_ms * 1000)


def fold(records: Iterable[Any], label: Callable[[int], str | None] | None, data_of: Callable[[Any], bytes]
         ) -> Folded:
    """Fold decision-lane records (already deduplicated) into counter deltas. `label(flow_id)` is the
    truth (None: the truth is not loaded, or the flow is unknown to it)."""
    out = Folded()
    hops = _Hops()
    d = out.deltas
    for record in records:
        try:
            event = lane_event_decoder.decode(data_of(record))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            out.rejected.append((record, f"UNDECODABLE_ENVELOPE: {exc}"))
            continue
        if event.event_type == CASE_TRIGGER:
            d["case_triggers"] += 1
            continue
        try:
            payload = decode_payload(event)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            d[f"undecodable.{event.event_type}"] += 1
            out.rejected.append((record, f"PAYLOAD_CONTRACT: {event.event_type}: {exc}"))
            continue
        if event.event_type == DECISION_RESPONSE:
            _decision(payload, d, hops, label, out)
        elif event.event_type == ACTION_INTENT:
            assert isinstance(payload, ActionIntentPayload)
            d["intents"] += 1
            d[f"intents.kind.{payload.action_kind}"] += 1
        elif event.event_type == ACTION_OUTCOME:
            assert isinstance(payload, ActionOutcomePayload)
            d["outcomes"] += 1
            d[f"outcomes.status.{payload.status}"] += 1
            done = _epoch(payload.completed_at_utc)
            hops.observe("decision_to_outcome", (done - _epoch(payload.decided_at_utc)) * 1000)
            hops.observe("admit_to_outcome", (done - _epoch(payload.admitted_at_utc)) * 1000)
            d[f"tp.outcome.{int(done)}"] += 1
        elif event.event_type == AUDIT_RECORD:
            assert isinstance(payload, AuditRecordPayload)
            d["audits"] += 1
            d[f"audits.chain.{payload.chain_status}"] += 1
            hops.observe("admit_to_audit", payload.admit_to_audit_ms)
            d[f"tp.audited.{_second(payload.audited_at_utc)}"] += 1
    hops.into(d)
    return out


def _decision(p: DecisionPayload, d: Counter[str], hops: _Hops, label: Callable[[int], str | None] | None,
              out: Folded) -> None:
    d["decisions"] += 1
    d[f"decisions.action.{p.action}"] += 1
    d[f"decisions.context.{p.context_status}"] += 1
    d[f"decisions.posture.{p.posture.mode}"] += 1
    hops.observe("admit_to_decision", p.timings.admit_to_decision_ms)
    d[f"tp.admitted.{_second(p.timings.admitted_at_utc)}"] += 1
    d[f"tp.decided.{_second(p.timings.decided_at_utc)}"] += 1
    truth = label(p.flow_id) if label is not None else None
    if truth is None:
        out.unscored.append((p.decision_id, p.flow_id, p.action))
    else:
        d[f"q.{truth}.{p.action}"] += 1


# ------------------------------------------------------------------------------ reading the counters


def histogram(counts: dict[str, int], hop: str) -> LatencyHistogram:
    """The hop's histogram rebuilt from `lat.<hop>.*` counters."""
    h = LatencyHistogram()
    for i in range(len(h.counts)):
        n = counts.get(f"lat.{hop}.b{i}", 0)
        h.counts[i] = n
        h.total += n
    if h.total:
        # The highest non-empty bucket's upper bound stands for the largest value (percentiles
        # are read as bucket upper bounds too).
        h.max_ms = h.buckets()[-1][0]
    h.sum_ms = counts.get(f"lat.{hop}.sum_us", 0) / 1000.0
    return h


def series(counts: dict[str, int], stage: str) -> dict[int, int]:
    prefix = f"tp.{stage}."
    return {int(k[len(prefix):]): v for k, v in counts.items() if k.startswith(prefix)}


def prefixed(counts: dict[str, int], prefix: str) -> dict[str, int]:
    return {k[len(prefix):]: v for k, v in counts.items() if k.startswith(prefix)}
