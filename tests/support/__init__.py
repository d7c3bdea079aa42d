"""Test-only code shared by the integration, e2e and chaos suites: tiny actors, their tables, helpers.

Pack processes import the actors too (`tests.support.actors:...` in `tests/support/packs/*.yaml`), so
the project root must be on their `PYTHONPATH` (`harness.pack_env` puts it there).
"""
