"""Label Store (`label_store`): the append-only writer boundary for label assertions, and its reader.

Sources: HUMAN (the case API), EXTERNAL (the chargeback feed), AUTO (CM; never training data).
Outcomes per assertion: ACCEPTED / DUPLICATE / MISMATCH. Reads: `reader.labels_as_of` (what was
known at T, with an explicit CONFLICT when sources disagree) and `reader.assertions_for`.
"""

from . import reader
from ._actor import LabelStore
from ._store import Outcome, outcome_of, write_assertions

__all__ = ["LabelStore", "Outcome", "outcome_of", "reader", "write_assertions"]
