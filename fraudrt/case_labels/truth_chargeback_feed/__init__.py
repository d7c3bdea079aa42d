"""The simulated chargeback feed (`truth_chargeback_feed`). IT READS GROUND TRUTH: the only
component of the case plane that does. It gives every run EXTERNAL labels without a person:
a configurable share of the run's flows, each known a configurable delay (in the world's clock)
after the flow."""

from ._actor import ACTOR_ID, PROVIDER, TruthChargebackFeed, selected
from ._truth import FLOW_ANCHOR_OUTPUTS, Truth, TruthUnavailable, load_truth

__all__ = ["ACTOR_ID", "FLOW_ANCHOR_OUTPUTS", "PROVIDER", "Truth", "TruthChargebackFeed", "TruthUnavailable",
           "load_truth", "selected"]
