"""Fixtures of the dashboard tests."""

from tests.test_config import site  # noqa: F401  (a fixture: a folder with an inbox and a password)
