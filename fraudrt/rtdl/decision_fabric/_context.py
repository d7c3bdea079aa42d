"""A batch's context: the projectors' answers for its flows, and the bounded in-batch wait for them.

Each source is read through its owner's typed reader, one statement per source for the whole batch
(arrays in, rows out), and only for the sources the posture needs (`GROUP_SOURCE`): CSFB for the
binding, OFP for the velocity windows, IEG for the graph. A flow is complete for a posture once every
source it needs answers `complete`; complete answers never change, so they are kept and only the
flows still incomplete in a source are asked again.

The in-batch wait is brief and bounded: it re-reads only when a needed projector commits a
checkpoint (the runtime's fences notify "<component> <platform_run_id>" on `rt_checkpoints` at every
commit, and CSFB's completions commit with its checkpoint), never on a timer per event. What is still
incomplete at the end of the budget waits durably (the actor's pending rows and timers).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import anyio

from fraudrt.rtdl.context_store_flow_binding import FlowBinding, resolve_flow_binding
from fraudrt.rtdl.identity_entity_graph import GraphFeatures, graph_features
from fraudrt.rtdl.online_feature_plane import FlowFeatures, features_for

# The runtime's checkpoint notifications (fraudrt.runtime fences): payload "<component> <run>".
CHECKPOINT_CHANNEL: Final = "rt_checkpoints"
GROUP_SOURCE: Final = {"binding": "csfb", "velocity": "ofp", "graph": "ieg"}
SOURCE_COMPONENT: Final = {"csfb": "context_store_flow_binding", "ofp": "online_feature_plane",
                           "ieg": "identity_entity_graph"}
SOURCES: Final = ("csfb", "ofp", "ieg")


def sources_for(groups: Iterable[str]) -> tuple[str, ...]:
    needed = {GROUP_SOURCE[g] for g in groups if g in GROUP_SOURCE}
    return tuple(s for s in SOURCES if s in needed)


@dataclass(slots=True)
class FlowContext:
    """What the projectors said about one flow so far (None: not asked yet)."""

    binding: FlowBinding | None = None
    features: FlowFeatures | None = None
    graph: GraphFeatures | None = None

    def complete(self, source: str) -> bool:
        if source == "csfb":
            return self.binding is not None and self.binding.complete
        if source == "ofp":
            return self.features is not None and self.features.complete
        return self.graph is not None and self.graph.complete

    def missing(self, sources: Iterable[str]) -> list[str]:
        """What each incomplete source waits for, e.g. `csfb:arrival_event`, `ofp:watermark`."""
        out = []
        for source in sources:
            if self.complete(source):
                continue
            if source == "csfb":
                what = ",".join(self.binding.missing) if self.binding is not None else "unread"
            elif source == "ofp":
                what = (self.features.waiting_for or "unread") if self.features is not None else "unread"
            else:
                what = (self.graph.waiting_for or "unread") if self.graph is not None else "unread"
            out.append(f"{source}:{what}")
        return out


@dataclass(slots=True)
class BatchContext:
    contexts: dict[int, FlowContext] = field(default_factory=dict)
    ofp_watermark: str | None = None
    reads: int = 0
    # How long the batch waited for context in the handler (0: it was all there at the first read).
    waited_s: float = 0.0

    def incomplete(self, flows: Iterable[int], sources: Sequence[str]) -> list[int]:
        return [f for f in flows if not all(self.contexts[f].complete(s) for s in sources)]


async def read_sources(conn: Any, platform_run_id: str, flows: Sequence[int], sources: Sequence[str],
                       into: BatchContext) -> None:
    """Ask each source about the flows it has not answered `complete` for yet (one statement each)."""
    for flow in flows:
        into.contexts.setdefault(flow, FlowContext())
    for source in sources:
        ask = [f for f in dict.fromkeys(flows) if not into.contexts[f].complete(source)]
        if not ask:
            continue
        into.reads += 1
        if source == "csfb":
            for flow_id, binding in (await resolve_flow_binding(conn, platform_run_id, ask)).items():
                into.contexts[flow_id].binding = binding
        elif source == "ofp":
            batch = await features_for(conn, platform_run_id, ask)
            into.ofp_watermark = batch.progress.release_watermark_ts_utc
            for features in batch.flows:
                into.contexts[features.flow_id].features = features
        else:
            for graph in await graph_features(conn, platform_run_id, ask):
                into.contexts[graph.flow_id].graph = graph


async def _any(events: Sequence[anyio.Event], timeout: float) -> None:
    """Return when any event is set or `timeout` has passed."""
    with anyio.move_on_after(timeout):
        async with anyio.create_task_group() as tg:
            async def one(event: anyio.Event) -> None:
                await event.wait()
                tg.cancel_scope.cancel()

            for event in events:
                tg.start_soon(one, event)


async def _true() -> bool:
    return True


async def settle(conn: Any, platform_run_id: str, flows: Sequence[int], sources: Sequence[str], *,
                 notifications: Any, budget_s: float) -> BatchContext:
    """Read the flows' context, waiting up to `budget_s` for what is missing, woken by the needed
    projectors' commits. Returns whatever is known at the end (complete or not)."""
    out = BatchContext()
    if not sources:
        return out
    deadline = time.monotonic() + budget_s
    started = time.monotonic()
    waiting = list(flows)
    while True:
        events = []
        if notifications is not None and budget_s > 0:
            # Registered before the read, so a commit between the read and the wait is not missed.
            # The no-op wait makes sure the pack's listener is LISTENing on the channel.
            await notifications.wait(CHECKPOINT_CHANNEL, "", _true, 0.0)
            events = [notifications.event(CHECKPOINT_CHANNEL, f"{SOURCE_COMPONENT[s]} {platform_run_id}")
                      for s in sources]
        await read_sources(conn, platform_run_id, waiting, sources, out)
        waiting = out.incomplete(waiting, sources)
        remaining = deadline - time.monotonic()
        if not waiting or remaining <= 0 or not events:
            break
        await _any(events, remaining)
        out.waited_s = time.monotonic() - started
    return out
