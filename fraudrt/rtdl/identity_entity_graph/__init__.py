"""Identity/Entity Graph (IEG): typed entities and edges of a run, and each flow's graph features.

`IdentityEntityGraph` is the actor (rtdl_core pack); `reader` is how other packages read the graph;
`offline` computes the same graph and features from a world's parquet (the policy fitter's side).
The features' one definition is in `_definition.py`.
"""

from ._actor import IdentityEntityGraph
from ._definition import (
    DEFINITION,
    DEFINITION_DIGEST,
    DEFINITION_NAME,
    EDGE_TYPES,
    ENTITY_TYPES,
    FEATURE_NAMES,
    Definition,
    graph_version,
    to_i64,
)
from .offline import graph_edges, graph_entities, graph_features_offline, observations, read_flow_anchors
from .reader import GraphFeatures, GraphProgress, graph_features, graph_progress

__all__ = [
    "DEFINITION",
    "DEFINITION_DIGEST",
    "DEFINITION_NAME",
    "EDGE_TYPES",
    "ENTITY_TYPES",
    "FEATURE_NAMES",
    "Definition",
    "GraphFeatures",
    "GraphProgress",
    "IdentityEntityGraph",
    "graph_edges",
    "graph_entities",
    "graph_features",
    "graph_features_offline",
    "graph_progress",
    "graph_version",
    "observations",
    "read_flow_anchors",
    "to_i64",
]
