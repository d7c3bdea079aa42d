"""Every id and digest recipe of the engine world generator, in one place.

Hex ids are sha256 over a recipe name and the inputs that define the thing, so the same parameters give
the same world identity on every run. Row-level 64-bit ids (flow, party, device, ...) are too many for a
per-row sha256, so they use one sha256-derived 64-bit key per (recipe, world) and a SplitMix64 finaliser
over the row's defining integers, vectorised with numpy. The scalar twins below are the reference
implementation (other components and the tests use them to recompute an id from a row).

Recipes (canon = json.dumps(sort_keys=True, ensure_ascii=True, separators=(",", ":"))):

- ``parameter_hash``      sha256(canon({"recipe": "fraudrt.engine.parameter_hash.v1", **generation parameters}))
- ``manifest_fingerprint`` sha256(canon({"recipe": "fraudrt.engine.manifest_fingerprint.v1", "engine",
                          "engine_version", "parameter_hash", "catalogue_digest", "gate_map_digest"}))
- engine ``run_id``       sha256("fraudrt.engine.run_id.v1|{mf}|{ph}|{seed}|{scenario_id}")[:32]
- 64-bit key of a recipe  int.from_bytes(sha256("{recipe}|{mf}|{ph}|{seed}|{scenario_id}")[:8], "big")
- ``flow_id``             1 + mix(mix(key("fraudrt.engine.flow_id.v1") ^ merchant_id) ^ arrival_seq) % (2**63 - 1)
                          (control_ingress §3.3: a deterministic 64-bit hash of the world key, merchant_id and
                          arrival_seq, in [1, 2**63))
- entity ids              1 + mix(key("fraudrt.engine.<kind>_id.v1") ^ mix(index)) % (2**63 - 1), kind in
                          merchant, party, account, instrument, device, ip, site, edge
- ``session_id``          1 + mix(key("fraudrt.engine.session_id.v1") ^ mix(party_id ^ mix(device_id ^
                          mix(session_start_us)))) % (2**63 - 1)
- ``routing_universe_hash`` sha256("fraudrt.engine.routing_universe.v1|{mf}|{seed}")
- RNG entropy             int(sha256("fraudrt.engine.rng.v1|{ph}|{seed}|{scenario_id}"), 16)

where mix is the SplitMix64 finaliser on uint64 (wrapping arithmetic).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import numpy.typing as npt

from fraudrt.contracts import canon_compact, sha256_hex

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

_MASK64 = (1 << 64) - 1
_ID_MODULUS = (1 << 63) - 1  # ids land in [1, 2**63): positive in a signed 64-bit column, never 0
_GAMMA = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def parameter_hash(parameters: dict[str, Any]) -> str:
    return sha256_hex(canon_compact({"recipe": "fraudrt.engine.parameter_hash.v1", **parameters}))


def manifest_fingerprint(
    *, engine: str, engine_version: str, parameter_hash: str, catalogue_digest: str, gate_map_digest: str
) -> str:
    return sha256_hex(
        canon_compact(
            {
                "recipe": "fraudrt.engine.manifest_fingerprint.v1",
                "engine": engine,
                "engine_version": engine_version,
                "parameter_hash": parameter_hash,
                "catalogue_digest": catalogue_digest,
                "gate_map_digest": gate_map_digest,
            }
        )
    )


def engine_run_id(manifest_fingerprint: str, parameter_hash: str, seed: int, scenario_id: str) -> str:
    return sha256_hex(f"fraudrt.engine.run_id.v1|{manifest_fingerprint}|{parameter_hash}|{seed}|{scenario_id}")[:32]


def routing_universe_hash(manifest_fingerprint: str, seed: int) -> str:
    return sha256_hex(f"fraudrt.engine.routing_universe.v1|{manifest_fingerprint}|{seed}")


def rng_entropy(parameter_hash: str, seed: int, scenario_id: str) -> int:
    return int(sha256_hex(f"fraudrt.engine.rng.v1|{parameter_hash}|{seed}|{scenario_id}"), 16)


def recipe_key(recipe: str, manifest_fingerprint: str, parameter_hash: str, seed: int, scenario_id: str) -> int:
    digest = hashlib.sha256(f"{recipe}|{manifest_fingerprint}|{parameter_hash}|{seed}|{scenario_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


# --- SplitMix64, scalar (reference) and vectorised -------------------------------------------------


def mix64(x: int) -> int:
    z = (x + _GAMMA) & _MASK64
    z = ((z ^ (z >> 30)) * _M1) & _MASK64
    z = ((z ^ (z >> 27)) * _M2) & _MASK64
    return z ^ (z >> 31)


def mix64_array(x: U64) -> U64:
    # uint64 array arithmetic wraps modulo 2**64, which is exactly SplitMix64's arithmetic.
    with np.errstate(over="ignore"):
        z = x + np.uint64(_GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
        out: U64 = z ^ (z >> np.uint64(31))
    return out


def _to_id(h: int) -> int:
    return 1 + h % _ID_MODULUS


def _to_id_array(h: U64) -> I64:
    return ((h % np.uint64(_ID_MODULUS)) + np.uint64(1)).astype(np.int64)


def flow_id(
    manifest_fingerprint: str, parameter_hash: str, seed: int, scenario_id: str, merchant_id: int, arrival_seq: int
) -> int:
    key = recipe_key("fraudrt.engine.flow_id.v1", manifest_fingerprint, parameter_hash, seed, scenario_id)
    return _to_id(mix64(mix64(key ^ (merchant_id & _MASK64)) ^ (arrival_seq & _MASK64)))


def flow_id_array(key: int, merchant_id: U64, arrival_seq: I64) -> I64:
    """Vectorised ``flow_id``; ``key`` = recipe_key("fraudrt.engine.flow_id.v1", world...)."""
    inner = mix64_array(np.uint64(key) ^ merchant_id.astype(np.uint64))
    return _to_id_array(mix64_array(inner ^ arrival_seq.astype(np.uint64)))


def entity_id(key: int, index: int) -> int:
    return _to_id(mix64(key ^ mix64(index)))


def entity_id_array(key: int, index: npt.NDArray[np.integer[Any]]) -> I64:
    return _to_id_array(mix64_array(np.uint64(key) ^ mix64_array(index.astype(np.uint64))))


def session_id_array(key: int, party_id: I64, device_id: I64, start_us: I64) -> I64:
    inner = mix64_array(device_id.astype(np.uint64) ^ mix64_array(start_us.astype(np.uint64)))
    return _to_id_array(mix64_array(np.uint64(key) ^ mix64_array(party_id.astype(np.uint64) ^ inner)))
