"""Shared fixtures: each backend's fixtures live in tests/fixtures/ as plugins."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.s3",
    "tests.fixtures.server",
    "tests.fixtures.otlp",
    "tests.fixtures.private_postgres",
    "tests.fixtures.browser",
]
