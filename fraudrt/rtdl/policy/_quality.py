"""Decision quality against a world's truth: precision, recall and false-positive rate.

A flow is *acted on* when it is held for REVIEW or DECLINEd (STEP_UP asks the customer for more and
is reported separately as friction). Over a world's flows:

- recall: share of fraudulent flows acted on; false-positive rate: share of legitimate flows acted
  on; precision: share of acted-on flows that are fraudulent;
- per action: how many legitimate and fraudulent flows got it, and its precision;
- per campaign type: flows, share acted on (recall), share stepped up.

Two ways in, one computation: `evaluate_world` replays a world offline through the shipped bundles
with the same scoring code DF runs (`_scoring.decide`); `quality_of` takes (flow_id, action) pairs
from any source, e.g. a decided run's `decision_fabric.decisions_for`, which is what the run report
calls. Truth is read here, and only here and in `policy fit`: decisions never see it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

import msgspec
import numpy as np
import polars as pl

from fraudrt.contracts import ACTIONS

from ._bundle import LoadedBundle
from ._fit import world_truth
from ._inputs import frame_columns, offline_inputs
from ._scoring import decide, needed_inputs

ACTED: Final = frozenset({"REVIEW", "DECLINE"})
TARGET_RECALL: Final = 0.80
TARGET_FPR: Final = 0.01


class ActionStats(msgspec.Struct, frozen=True, kw_only=True):
    action: str
    legit: int
    fraud: int
    precision: float | None


class CampaignStats(msgspec.Struct, frozen=True, kw_only=True):
    campaign_type: str
    flows: int
    acted: int
    recall: float | None
    stepped_up: int


class QualityReport(msgspec.Struct, frozen=True, kw_only=True):
    label: str
    bundle_id: str | None = None
    bundle_digest: str | None = None
    groups: list[str] = msgspec.field(default_factory=list)
    flows: int
    fraud_flows: int
    acted: int
    precision: float | None
    recall: float | None
    false_positive_rate: float | None
    legit_step_up_rate: float | None
    per_action: list[ActionStats]
    per_campaign: list[CampaignStats]
    # Flows decided but absent from the truth, and truth flows with no decision (a run report checks both).
    unmatched_decisions: int = 0
    undecided_flows: int = 0

    @property
    def meets_target(self) -> bool:
        return (self.recall is not None and self.recall >= TARGET_RECALL and self.false_positive_rate is not None
                and self.false_positive_rate <= TARGET_FPR)


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 6) if b else None


def quality_of(decisions: Iterable[tuple[int, str]], truth: pl.DataFrame, *, label: str,
               bundle: LoadedBundle | None = None, groups: Sequence[str] = ()) -> QualityReport:
    """Quality of (flow_id, action) pairs against `truth` (`world_truth`: flow_id, fraud_flag, campaign_type)."""
    pairs = list(decisions)
    decided = pl.DataFrame({"flow_id": [p[0] for p in pairs], "action": [p[1] for p in pairs]},
                           schema={"flow_id": pl.Int64, "action": pl.String})
    joined = truth.join(decided, on="flow_id", how="inner")
    unmatched = decided.height - joined.height
    undecided = truth.height - joined.select(pl.col("flow_id").n_unique()).item()
    fraud = joined["fraud_flag"].to_numpy()
    action = joined["action"].to_numpy()
    acted = np.isin(action, list(ACTED))
    n_fraud, n_legit = int(fraud.sum()), int((~fraud).sum())
    per_action = []
    for a in ACTIONS:
        mask = action == a
        f, lg = int((mask & fraud).sum()), int((mask & ~fraud).sum())
        per_action.append(ActionStats(action=a, legit=lg, fraud=f, precision=_ratio(f, f + lg)))
    per_campaign = []
    campaigns = joined["campaign_type"].to_numpy()
    for ctype in sorted(set(campaigns.tolist())):
        mask = campaigns == ctype
        n = int(mask.sum())
        hit = int((mask & acted).sum())
        per_campaign.append(CampaignStats(campaign_type=ctype, flows=n, acted=hit, recall=_ratio(hit, n),
                                          stepped_up=int((mask & (action == "STEP_UP")).sum())))
    caught = int((acted & fraud).sum())
    return QualityReport(
        label=label, bundle_id=bundle.bundle.bundle_id if bundle else None,
        bundle_digest=bundle.digest if bundle else None, groups=list(groups), flows=joined.height,
        fraud_flows=n_fraud, acted=int(acted.sum()), precision=_ratio(caught, int(acted.sum())),
        recall=_ratio(caught, n_fraud),
        false_positive_rate=_ratio(int((acted & ~fraud).sum()), n_legit),
        legit_step_up_rate=_ratio(int(((action == "STEP_UP") & ~fraud).sum()), n_legit),
        per_action=per_action, per_campaign=per_campaign, unmatched_decisions=unmatched, undecided_flows=undecided)


def evaluate_world(engine_run_root: Path | str, bundles: Sequence[tuple[str, LoadedBundle, Sequence[str], bool]],
                   *, mode: str = "fraud") -> list[QualityReport]:
    """Replay a world offline through each (label, bundle, allowed groups, use model) and score it."""
    inputs = offline_inputs(engine_run_root, mode=mode)
    truth = world_truth(engine_run_root, mode)
    flow_ids = inputs["flow_id"].to_list()
    reports = []
    for label, loaded, groups, use_model in bundles:
        b = loaded.bundle
        cols = frame_columns(inputs, needed_inputs(b, groups, use_model))
        verdicts = decide(b, cols, groups=groups, use_model=use_model)
        reports.append(quality_of(zip(flow_ids, (v.action for v in verdicts), strict=True), truth, label=label,
                                  bundle=loaded, groups=groups))
    return reports


def compare(model: QualityReport, rules: QualityReport) -> dict[str, bool]:
    """The issue's targets: the model catches >= 80% acting on <= 1% of legitimate flows, and beats
    the rules-only bundle on both recall and false-positive rate."""
    return {
        "model_meets_target": model.meets_target,
        "beats_rules_recall": (model.recall or 0.0) > (rules.recall or 0.0),
        "beats_rules_fpr": (model.false_positive_rate if model.false_positive_rate is not None else 1.0)
        < (rules.false_positive_rate if rules.false_positive_rate is not None else 1.0),
    }
