"""The run report's content, from what the reporter gathered; pure (no I/O), so it is unit-tested.

Sections: `ingress` (IG's decisions by output and producer), `components` (health and counters of
every component the packs name, `MISSING` when a component has produced no evidence yet), `rtdl`
(the decision lane's events as the reporter saw them on the bus), `latency_ms` (p50/p95/p99 per hop,
from the payloads, beside what the components' own metrics say), `archive`, `case_labels`,
`quality` (against the oracle's truth), `throughput`, `run_completed` with its reasons, and
`evidence_refs`. No credential is ever an input here.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Final

from fraudrt.contracts import ACTIONS

from ._aggregate import HOPS, STAGES, histogram, prefixed, series
from ._truth import LEGIT, Truth

# Which actions count as "acting on" a flow (issue 12: catches fraud with REVIEW or DECLINE).
FLAGGED: Final = ("REVIEW", "DECLINE")
# Producer families by IG event class: IG's index records the class, not the envelope's producer.
_PRODUCER_OF_CLASS_PREFIX: Final = (("traffic_", "world_stream_producer"), ("context_", "world_stream_producer"),
                                    ("rtdl_", "decision_lane"), ("case_", "case_labels"), ("audit", "ingestion_gate"))
# The components whose metrics carry their own latency percentiles (DESIGN §10) and the hop each measures.
COMPONENT_HOPS: Final = {"decision_fabric": "admit_to_decision", "action_layer": "decision_to_outcome",
                         "decision_log_audit": "admit_to_audit"}


def producer_of(event_class: str | None) -> str:
    for prefix, producer in _PRODUCER_OF_CLASS_PREFIX:
        if event_class and event_class.startswith(prefix):
            return producer
    return "unknown"


def ingress_section(ingress: Any | None, note: str | None) -> dict[str, Any]:
    if ingress is None:
        return {"available": False, "note": note or "IG's tables not read yet"}
    totals: dict[str, int] = defaultdict(int)
    by_output: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    by_producer: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for c in ingress.counts:
        totals[c.decision] += c.count
        by_output[c.event_type or "?"][c.decision] += c.count
        by_producer[producer_of(c.event_class)][c.decision] += c.count
    return {
        "available": True,
        "admit": totals.get("ADMIT", 0), "duplicate": totals.get("DUPLICATE", 0),
        "quarantine": totals.get("QUARANTINE", 0), "publish_pending": totals.get("PENDING", 0),
        "by_output": {k: dict(v) for k, v in sorted(by_output.items())},
        "by_producer": {k: dict(v) for k, v in sorted(by_producer.items())},
        "quarantine_reasons": {f"{q.event_type}:{q.reason_code}": q.count for q in ingress.quarantine_reasons},
        "producer_basis": "IG records the event class of each decision, not the envelope's producer: the "
                          "producer is the class's (engine outputs are streamed by WSP only)",
    }


def component_section(files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`files[name] = {"health": doc|None, "metrics": doc|None, "pack_id": ..., "health_path": ...}`."""
    out: dict[str, Any] = {}
    for name, f in sorted(files.items()):
        health, metrics = f.get("health"), f.get("metrics")
        if health is None and metrics is None:
            out[name] = {"health_state": "MISSING", "pack_id": f.get("pack_id"),
                         "reasons": [f"no evidence yet: {f.get('health_path')}"]}
            continue
        out[name] = {"health_state": (health or {}).get("health_state", "MISSING"),
                     "reasons": (health or {}).get("reasons", []), "pack_id": f.get("pack_id"),
                     "generated_at_utc": (health or metrics or {}).get("generated_at_utc"),
                     "counters": (metrics or {}).get("counters", {}),
                     "gauges": (metrics or {}).get("gauges", {}),
                     "details": (health or {}).get("details", {})}
    return out


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 6) if b else None


def quality_section(counts: dict[str, int], truth: Truth | None, unscored: int) -> dict[str, Any]:
    q = prefixed(counts, "q.")
    if truth is None and not q:
        return {"available": False, "note": "the oracle's truth for this run is not readable yet "
                                            "(no SR facts view)", "unscored_decisions": unscored}
    # cells[truth][action]
    cells: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(ACTIONS, 0))
    for key, n in q.items():
        label, _, action = key.rpartition(".")
        cells[label][action] = cells[label].get(action, 0) + n
    legit = cells.get(LEGIT, dict.fromkeys(ACTIONS, 0))
    fraud_labels = sorted(k for k in cells if k != LEGIT)
    fraud = {a: sum(cells[k].get(a, 0) for k in fraud_labels) for a in ACTIONS}
    n_fraud, n_legit = sum(fraud.values()), sum(legit.values())

    def scores(acted: tuple[str, ...]) -> dict[str, Any]:
        tp = sum(fraud.get(a, 0) for a in acted)
        fp = sum(legit.get(a, 0) for a in acted)
        return {"true_positives": tp, "false_positives": fp, "precision": _ratio(tp, tp + fp),
                "recall": _ratio(tp, n_fraud), "false_positive_rate": _ratio(fp, n_legit)}

    per_campaign = {}
    for label in fraud_labels:
        row = cells[label]
        total = sum(row.values())
        flagged = sum(row.get(a, 0) for a in FLAGGED)
        per_campaign[label.removeprefix("fraud:")] = {"flows": total, "by_action": dict(row),
                                                     "recall_flagged": _ratio(flagged, total)}
    return {
        "available": True, "scored_decisions": n_fraud + n_legit, "unscored_decisions": unscored,
        "fraud_flows_decided": n_fraud, "legit_flows_decided": n_legit,
        "confusion": {"fraud": fraud, "legit": dict(legit)},
        "per_action": {a: scores((a,)) for a in ACTIONS},
        "flagged": {"actions": list(FLAGGED), **scores(FLAGGED)},
        "step_up_or_more": {"actions": ["STEP_UP", *FLAGGED], **scores(("STEP_UP", *FLAGGED))},
        "per_campaign_type": per_campaign,
        "truth_basis": None if truth is None else {"facts_view": truth.facts_ref, "output_id": truth.traffic_output_id,
                                                   "flows_in_world": truth.flows_total,
                                                   "fraud_flows_in_world": truth.fraud_flows_total},
    }


def latency_section(counts: dict[str, int], components: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for hop in HOPS:
        h = histogram(counts, hop)
        out[hop] = {"observed": h.summary(), "buckets_ms": [[round(u, 3), c] for u, c in h.buckets()]}
    for comp, hop in COMPONENT_HOPS.items():
        gauges = (components.get(comp) or {}).get("gauges") or {}
        # `latency_ms.<hop>.<quantile>` as the component reports it (DESIGN §10).
        own = {q: gauges.get(f"latency_ms.{hop}.{q}") for q in ("p50", "p95", "p99")}
        out[hop]["component_metrics"] = {"component": comp, **own} if any(v is not None for v in own.values()) \
            else None
    return out


def throughput_section(counts: dict[str, int]) -> dict[str, Any]:
    per_stage = {stage: series(counts, stage) for stage in STAGES}
    seconds = sorted({s for v in per_stage.values() for s in v})
    if not seconds:
        return {"start_epoch_s": None, "seconds": 0, "per_second": {}}
    start = seconds[0]
    width = seconds[-1] - start + 1
    return {"start_epoch_s": start, "seconds": width,
            "per_second": {stage: [v.get(start + i, 0) for i in range(width)] for stage, v in per_stage.items()},
            "peak_per_second": {stage: max(v.values(), default=0) for stage, v in per_stage.items()}}


def rtdl_section(counts: dict[str, int]) -> dict[str, Any]:
    return {"decisions": counts.get("decisions", 0), "intents": counts.get("intents", 0),
            "outcomes": counts.get("outcomes", 0), "audits": counts.get("audits", 0),
            "case_triggers": counts.get("case_triggers", 0),
            "decision_mix": {a: counts.get(f"decisions.action.{a}", 0) for a in ACTIONS},
            "context_status": prefixed(counts, "decisions.context."),
            "posture": prefixed(counts, "decisions.posture."),
            "outcome_status": prefixed(counts, "outcomes.status."),
            "audit_chain_status": prefixed(counts, "audits.chain."),
            "undecodable": prefixed(counts, "undecodable.")}


def completion(rtdl: dict[str, Any], ingress: dict[str, Any], wsp: dict[str, Any] | None, truth: Truth | None
               ) -> dict[str, Any]:
    """`run_completed`: WSP has finished its stream, and every AUTH_REQUEST it put through IG has one
    decision, each decision one intent, each intent one outcome, each decision one resolved audit.
    The expected decisions are the AUTH_REQUESTs among the traffic events IG admitted, counted from
    the oracle's stream view (WSP streams it in order, so they are its first N rows)."""
    reasons: list[str] = []
    expected: int | None = None
    if wsp is None:
        reasons.append("WSP has produced no evidence for this run")
    else:
        counters = (wsp.get("counters") or {})
        if not counters.get("streams_completed_total"):
            reasons.append("WSP has not finished streaming")
        if (wsp.get("details") or {}).get("active_message_id"):
            reasons.append("WSP is still streaming a READY")
    if not ingress.get("available"):
        reasons.append("IG's decisions not read")
    if truth is None:
        reasons.append("the oracle's stream view is not readable: the expected decisions are unknown")
    elif ingress.get("available"):
        admitted = ingress["by_output"].get(truth.traffic_output_id, {}).get("ADMIT", 0)
        expected = truth.expected_requests(admitted)
    got = rtdl["decisions"]
    if expected is not None and got != expected:
        reasons.append(f"decisions {got} != AUTH_REQUESTs admitted {expected}")
    if expected == 0:
        reasons.append("no AUTH_REQUEST admitted")
    for what, n in (("intents", rtdl["intents"]), ("audits", rtdl["audits"])):
        if n != got:
            reasons.append(f"{what} {n} != decisions {got}")
    if rtdl["outcomes"] != rtdl["intents"]:
        reasons.append(f"outcomes {rtdl['outcomes']} != intents {rtdl['intents']}")
    resolved = rtdl["audit_chain_status"].get("RESOLVED", 0)
    if resolved != got:
        reasons.append(f"resolved audit chains {resolved} != decisions {got}")
    return {"run_completed": not reasons, "reasons": reasons, "expected_decisions": expected,
            "definition": "WSP stream finished; decisions == AUTH_REQUESTs admitted (oracle stream view, first N "
                          "traffic rows); intents == decisions; outcomes == intents; audits == resolved audit "
                          "chains == decisions"}


def archive_section(components: dict[str, Any], ingress: dict[str, Any], rtdl: dict[str, Any]) -> dict[str, Any]:
    aw = components.get("archive_writer") or {}
    counters = aw.get("counters") or {}
    archived = counters.get("handled_total")
    published = (ingress.get("admit", 0) if ingress.get("available") else 0) + sum(
        rtdl[k] for k in ("decisions", "intents", "outcomes", "audits", "case_triggers"))
    return {"health_state": aw.get("health_state", "MISSING"), "archived_records": archived,
            "dead_lettered": counters.get("dead_lettered_total"), "published_records": published,
            "coverage": _ratio(int(archived), published) if archived is not None and published else None,
            "basis": "archive_writer's handled records over the run's records on the bus (IG admits + decision "
                     "lane events as the reporter counted them)"}


def case_labels_section(components: dict[str, Any], rtdl: dict[str, Any]) -> dict[str, Any]:
    def counter(comp: str, *names: str) -> Any:
        counters = (components.get(comp) or {}).get("counters") or {}
        return next((counters[n] for n in names if n in counters), None)

    return {"case_triggers_on_bus": rtdl["case_triggers"],
            "triggers_seen": counter("case_trigger", "triggers_seen", "triggers_seen_total"),
            "cases_created": counter("case_mgmt", "cases_created", "cases_created_total"),
            "labels_accepted": counter("label_store", "accepted", "accepted_total", "labels_accepted_total"),
            "health_states": {c: (components.get(c) or {}).get("health_state", "MISSING")
                              for c in ("case_trigger", "case_mgmt", "label_store")}}


def anomalies(components: dict[str, Any], ingress: dict[str, Any], quality: dict[str, Any],
              rtdl: dict[str, Any]) -> dict[str, int]:
    """Anomalies worth a governance event: kind -> count (only kinds with a count > 0)."""
    out: dict[str, int] = {}
    if ingress.get("available") and ingress["quarantine"]:
        out["ig_quarantine"] = ingress["quarantine"]
    for name, comp in components.items():
        dead = (comp.get("counters") or {}).get("dead_lettered_total")
        if dead:
            out[f"dead_letters:{name}"] = int(dead)
        mismatches = (comp.get("counters") or {}).get("payload_mismatches_total")
        if mismatches:
            out[f"payload_mismatches:{name}"] = int(mismatches)
    unresolved = ((components.get("decision_log_audit") or {}).get("details") or {}).get("lineage_unresolved_total")
    if unresolved:
        out["lineage_unresolved"] = int(unresolved)
    if quality.get("unscored_decisions"):
        out["decisions_without_truth"] = int(quality["unscored_decisions"])
    for event_type, n in rtdl["undecodable"].items():
        out[f"undecodable:{event_type}"] = n
    return out
