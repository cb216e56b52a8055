"""Fixtures shared by the integration tests of this directory (the session's are one level up)."""

from money_support import money_settings  # noqa: F401 (the money stack's settings, a fixture)
