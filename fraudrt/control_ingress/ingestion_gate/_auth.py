"""API keys for `X-IG-Api-Key`: from `IG_API_KEYS` (comma separated) or a 0600 file, never logged.

The file (Settings.ig.api_keys_file, default `<home>/secrets/ig_api_keys`) holds one key per line
(`#` comments allowed) and is created with one random key on first use. A request's key is compared
in constant time against every configured key, and the principal recorded in receipts is a short
fingerprint of the key, never the key (reference critique §13.3 #24).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from fraudrt.config import Settings

from ._records import Actor

KEYS_ENV: Final = "IG_API_KEYS"
HEADER: Final = "X-IG-Api-Key"


class ApiKeyError(Exception):
    """No usable key is configured."""


def api_keys_path(settings: Settings) -> Path:
    if settings.ig.api_keys_file:
        return Path(settings.ig.api_keys_file)
    return Path(settings.home) / "secrets" / "ig_api_keys"


def _read_keys(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]


def _create_keys_file(path: Path, service: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # O_EXCL: two processes starting at once must not each write (and trust) a different key.
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"# {service} API keys, one per line. Created by fraudrt.\n")
            fh.write(secrets.token_urlsafe(32) + "\n")


def load_keys(path: Path, env_var: str, env: Mapping[str, str] | None = None, *, service: str = "IG") -> list[str]:
    """Keys from `env_var` (comma separated) if set, else from the 0600 file at `path` (created with
    one random key if absent). Any HTTP service of the platform authenticates this way (IG, the case
    management API), each with its own file and variable."""
    environ = os.environ if env is None else env
    from_env = environ.get(env_var)
    if from_env:
        keys = [k.strip() for k in from_env.split(",") if k.strip()]
    else:
        if not path.exists():
            _create_keys_file(path, service)
        keys = _read_keys(path)
    if not keys:
        raise ApiKeyError(f"no {service} API key configured ({env_var} empty and {path} has none)")
    return keys


def load_api_keys(settings: Settings, env: Mapping[str, str] | None = None) -> list[str]:
    """The configured IG keys: `IG_API_KEYS` if set, else the keys file (created if absent)."""
    return load_keys(api_keys_path(settings), KEYS_ENV, env)


def ig_api_key(settings: Settings) -> str:
    """The first configured key: what WSP (and other in-platform producers) send."""
    return load_api_keys(settings)[0]


def key_fingerprint(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


class KeyRing:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ApiKeyError("no IG API key configured")
        self._keys = [(k.encode(), Actor(actor_id=f"SYSTEM::{key_fingerprint(k)}", source_type="SYSTEM",
                                      auth_mode="api_key", principal=key_fingerprint(k)))
                      for k in keys]

    def authenticate(self, presented: str | None) -> Actor | None:
        """The actor for a valid key, else None. Every key is compared, so timing says nothing."""
        if presented is None:
            return None
        given = presented.encode("utf-8", "surrogateescape")
        found: Actor | None = None
        for key, actor in self._keys:
            if hmac.compare_digest(key, given) and found is None:
                found = actor
        return found
