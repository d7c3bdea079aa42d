"""The case + labels plane (seed step 10, pack `local_parity_case_labels_v0`).

CaseTrigger turns decision-lane evidence that needs a person into `case_trigger` events; Case
Management keeps one case per subject with an append-only timeline and serves the investigator
API; the Label Store is the append-only writer boundary for label assertions with as-of reads;
the truth chargeback feed (the plane's only reader of ground truth) gives every run EXTERNAL
labels. They talk through `fp.bus.case.v1` and the contracts in `fraudrt.contracts._cases`.
"""

from .case_mgmt import CaseMgmt
from .case_trigger import CaseTrigger
from .label_store import LabelStore
from .truth_chargeback_feed import TruthChargebackFeed

__all__ = ["CaseMgmt", "CaseTrigger", "LabelStore", "TruthChargebackFeed"]
