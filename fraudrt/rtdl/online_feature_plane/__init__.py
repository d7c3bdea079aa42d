"""Online Feature Plane: windowed per-key aggregates in event time, one vector per flow, as of the flow.

Public surface: the actor (`OnlineFeaturePlane`), the typed reader (`features_for`), the feature
definitions (`load_definitions`) and their offline computation (`offline_features`), which
`fraudrt policy fit` trains on.
"""

from ._actor import OnlineFeaturePlane
from ._definitions import AGGREGATES, DefinitionsError, FeatureDefinitions, load_definitions, parse_definitions
from .offline import flow_events, offline_features, read_world_events
from .reader import FeatureBatch, FlowFeatures, OfpProgress, feature_names, features_for

__all__ = [
    "AGGREGATES",
    "DefinitionsError",
    "FeatureBatch",
    "FeatureDefinitions",
    "FlowFeatures",
    "OfpProgress",
    "OnlineFeaturePlane",
    "feature_names",
    "features_for",
    "flow_events",
    "load_definitions",
    "offline_features",
    "parse_definitions",
    "read_world_events",
]
