"""A case's flows as the projectors hold them, read through their typed readers (never their tables).

The decision's own reasons and top contributions travel with the trigger; this adds the whole
online feature vector (OFP) and the graph features (IEG) of each flow, so an investigator sees
what the model saw. A projector whose tables are not in this database (its pack never ran here)
is reported as unavailable, not as an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

from fraudrt.rtdl.identity_entity_graph.reader import graph_features
from fraudrt.rtdl.online_feature_plane.reader import feature_names, features_for

from ._views import FeatureView

_MISSING = (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError)


async def flow_features(db: Any, platform_run_id: str, flow_ids: Sequence[int]) -> list[FeatureView]:
    if not flow_ids:
        return []
    views: dict[int, dict[str, Any]] = {f: {"flow_id": f, "unavailable": []} for f in flow_ids}
    try:
        batch = await features_for(db, platform_run_id, list(flow_ids))
        names_of: dict[str, tuple[str, ...] | None] = {}
        for f in batch.flows:
            view = views[f.flow_id]
            if not f.complete or f.values is None or f.definitions_digest is None:
                view["unavailable"].append(f"online: waiting for {f.waiting_for}")
                continue
            if f.definitions_digest not in names_of:
                names_of[f.definitions_digest] = await feature_names(db, f.definitions_digest)
            names = names_of[f.definitions_digest] or tuple(f"f{i}" for i in range(len(f.values)))
            view.update(online=dict(zip(names, f.values, strict=False)), online_complete=True,
                        online_definitions_digest=f.definitions_digest)
    except _MISSING:
        for view in views.values():
            view["unavailable"].append("online: the Online Feature Plane has no tables in this database")
    try:
        for g in await graph_features(db, platform_run_id, list(flow_ids)):
            view = views[g.flow_id]
            if not g.complete:
                view["unavailable"].append(f"graph: waiting for {g.waiting_for}")
                continue
            graph = msgspec.to_builtins(g)
            for key in ("flow_id", "complete", "waiting_for"):
                graph.pop(key, None)
            view.update(graph=graph, graph_complete=True)
    except _MISSING:
        for view in views.values():
            view["unavailable"].append("graph: the Identity/Entity Graph has no tables in this database")
    return [msgspec.convert(v, FeatureView) for v in views.values()]
