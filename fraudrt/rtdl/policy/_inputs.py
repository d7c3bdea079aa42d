"""The raw inputs a policy bundle may read, and how each is obtained online and offline.

An input is named `<group>.<name>`; the group says which source provides it, so a posture that drops
a group drops exactly the inputs of that source:

- `request.amount_minor`: the AUTH_REQUEST's amount in integer minor units (round half to even, as
  OFP aggregates amounts);
- `binding.is_virtual`: 1 when the flow's arrival was card-not-present (CSFB's arrival context);
- `velocity.<name>`: every OFP feature (`config/features/online_feature_plane.yaml` names);
- `graph.<name>`: every IEG feature (booleans as 0/1).

Online, the Decision Fabric fills the inputs of a batch of flows from the typed readers' answers
(`InputColumns.from_answers`); offline, `policy fit` and the quality evaluation compute the same
inputs for a whole world with polars, from the same feature definitions (`offline_inputs`). Both give
float64 columns keyed by input name, which is all the scoring code (`_scoring.py`) sees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt
import polars as pl

from fraudrt.rtdl.context_store_flow_binding import FlowBinding
from fraudrt.rtdl.identity_entity_graph import DEFINITION_DIGEST as IEG_DEFINITION_DIGEST
from fraudrt.rtdl.identity_entity_graph import FEATURE_NAMES as IEG_FEATURE_NAMES
from fraudrt.rtdl.identity_entity_graph import GraphFeatures
from fraudrt.rtdl.online_feature_plane import FeatureDefinitions, FlowFeatures, load_definitions

F64 = npt.NDArray[np.float64]

REQUEST_INPUTS: Final = ("request.amount_minor",)
BINDING_INPUTS: Final = ("binding.is_virtual",)
GRAPH_INPUTS: Final = tuple(f"graph.{n}" for n in IEG_FEATURE_NAMES)


def group_of(name: str) -> str:
    return name.split(".", 1)[0]


def velocity_inputs(definitions: FeatureDefinitions) -> tuple[str, ...]:
    return tuple(f"velocity.{n}" for n in definitions.names)


def known_inputs(definitions: FeatureDefinitions) -> frozenset[str]:
    return frozenset((*REQUEST_INPUTS, *BINDING_INPUTS, *velocity_inputs(definitions), *GRAPH_INPUTS))


def amount_minor(amount: float) -> int:
    """Integer minor units, half to even (Python's round, numpy's rint and OFP agree)."""
    return round(amount * 100)


def definitions_digests(definitions: FeatureDefinitions | None = None) -> dict[str, str]:
    """The feature definitions a bundle is fitted on and a decision is made with."""
    defs = definitions or load_definitions()
    return {"velocity": defs.digest, "graph": IEG_DEFINITION_DIGEST}


class InputColumns:
    """Named float64 columns of one batch of flows (all columns the same length)."""

    def __init__(self, n: int, columns: Mapping[str, F64]) -> None:
        self.n = n
        self.columns = dict(columns)

    def __getitem__(self, name: str) -> F64:
        return self.columns[name]

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    def take(self, rows: Sequence[int] | npt.NDArray[np.int64]) -> InputColumns:
        idx = np.asarray(rows, dtype=np.int64)
        return InputColumns(len(idx), {k: v[idx] for k, v in self.columns.items()})

    @classmethod
    def from_rows(cls, names: Sequence[str], rows: Sequence[Sequence[float]]) -> InputColumns:
        """Columns from per-flow rows (one value per name, in `names` order)."""
        if not rows:
            return cls(0, {n: np.zeros(0) for n in names})
        matrix = np.asarray(rows, dtype=np.float64)
        return cls(len(rows), {n: np.ascontiguousarray(matrix[:, i]) for i, n in enumerate(names)})


class OnlineFlow(NamedTuple):
    """One flow's answers from the typed readers (None: that source is not used for it)."""

    amount: float
    binding: FlowBinding | None
    features: FlowFeatures | None
    graph: GraphFeatures | None


class OnlineInputs:
    """Builds a batch's input columns from the readers' answers, for the inputs a bundle reads."""

    def __init__(self, definitions: FeatureDefinitions) -> None:
        self._velocity_index = {f"velocity.{n}": i for i, n in enumerate(definitions.names)}

    def value(self, name: str, flow: OnlineFlow) -> float:
        group, field = name.split(".", 1)
        if group == "request":
            return float(amount_minor(flow.amount))
        if group == "binding":
            arrival = flow.binding.arrival if flow.binding is not None else None
            # An arrival without the field (another engine's world) reads as card-present, as offline.
            return 1.0 if arrival is not None and arrival.is_virtual else 0.0
        if group == "velocity":
            assert flow.features is not None and flow.features.values is not None
            return float(flow.features.values[self._velocity_index[name]])
        assert flow.graph is not None
        return float(getattr(flow.graph, field))

    def columns(self, names: Sequence[str], flows: Sequence[OnlineFlow]) -> InputColumns:
        return InputColumns.from_rows(names, [[self.value(n, f) for n in names] for f in flows])


def offline_inputs(engine_run_root: Path | str, *, mode: str = "fraud", definitions: FeatureDefinitions | None = None,
                   scenario_id: str | None = None) -> pl.DataFrame:
    """Every input of every flow of a world: `flow_id`, `ts_utc`, then one Float64 column per input.

    Computed with the projectors' own offline twins (OFP's windows, IEG's graph, CSFB's bindings),
    which their tests hold equal to what the actors serve online. Nothing here reads ground truth.
    """
    from fraudrt.rtdl.context_store_flow_binding import offline as csfb_offline
    from fraudrt.rtdl.identity_entity_graph import graph_features_offline, observations, read_flow_anchors
    from fraudrt.rtdl.online_feature_plane import offline_features, read_world_events

    defs = definitions or load_definitions()
    events = read_world_events(engine_run_root, mode=mode, scenario_id=scenario_id)
    velocity = offline_features(events, defs)
    graph = graph_features_offline(observations(read_flow_anchors(engine_run_root, mode=mode,  # type: ignore[arg-type]
                                                                  scenario_id=scenario_id)))
    ae, aen, fa = csfb_offline.read_context(engine_run_root, mode, scenario_id)  # type: ignore[arg-type]
    bindings = csfb_offline.flow_bindings(ae, aen, fa)
    bindings_df = bindings.collect() if isinstance(bindings, pl.LazyFrame) else bindings
    requests = events.select("flow_id", pl.col("amount_minor").cast(pl.Float64).alias("request.amount_minor"))
    out = (velocity.select("flow_id", "ts_utc", *(pl.col(n).cast(pl.Float64).alias(f"velocity.{n}")
                                                   for n in defs.names))
           .join(requests, on="flow_id", how="inner")
           .join(bindings_df.select(pl.col("flow_id").cast(pl.Int64),
                                    pl.col("is_virtual").cast(pl.Float64).fill_null(0.0).alias("binding.is_virtual")),
                 on="flow_id", how="inner")
           .join(graph.select(pl.col("flow_id").cast(pl.Int64),
                              *(pl.col(n).cast(pl.Float64).alias(f"graph.{n}") for n in IEG_FEATURE_NAMES)),
                 on="flow_id", how="inner"))
    return out.sort("flow_id")


def frame_columns(frame: pl.DataFrame, names: Sequence[str]) -> InputColumns:
    """The named input columns of an `offline_inputs` frame."""
    return InputColumns(frame.height, {n: frame[n].to_numpy().astype(np.float64, copy=False) for n in names})
