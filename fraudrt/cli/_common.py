"""Shared CLI plumbing: the settings object on the click context and clean error reporting."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio
import click

from fraudrt.config import ConfigError, Settings, load_settings

T = TypeVar("T")


class CliState:
    def __init__(self, profile: str | None) -> None:
        self.profile = profile
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        # Loaded lazily so `--help` works without a valid profile.
        if self._settings is None:
            try:
                self._settings = load_settings(self.profile)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from exc
        return self._settings

    def reload(self) -> Settings:
        self._settings = None
        return self.settings


pass_state = click.make_pass_decorator(CliState)


def _dependency_errors() -> tuple[type[BaseException], ...]:
    # Imported here to keep them off the import path of `--help`.
    import asyncpg
    from botocore.exceptions import BotoCoreError, ClientError

    from fraudrt.runtime import BusError

    return (OSError, asyncpg.PostgresError, BotoCoreError, ClientError, BusError)


def run_async(fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    """Run a command's coroutine; a substrate that cannot be reached is a clear error, not a traceback."""
    dependency = _dependency_errors()
    try:
        return anyio.run(fn, *args)
    except dependency as exc:
        raise click.ClickException(f"a dependency is unavailable ({type(exc).__name__}: {exc}); "
                                   "is the substrate up? (`fraudrt substrate status`)") from exc
    except BaseExceptionGroup as group:
        first = group.exceptions[0] if len(group.exceptions) == 1 else None
        if isinstance(first, dependency):
            raise click.ClickException(f"a dependency is unavailable ({type(first).__name__}: {first}); "
                                       "is the substrate up? (`fraudrt substrate status`)") from group
        raise


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
