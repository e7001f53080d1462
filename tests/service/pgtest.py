"""A real PostgreSQL for the tests of the shared store: the server named by FACEGATE_TEST_PG_URL
(.ci/run starts a throwaway cluster and sets it), one fresh database per test or module,
dropped afterwards. Without it these tests skip with the reason, except under CI=true, where
a missing PostgreSQL is a failure (CI must test the shared store)."""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest


def server_url() -> str:
    url = os.environ.get("FACEGATE_TEST_PG_URL")
    if not url:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but FACEGATE_TEST_PG_URL is not set: the shared-store tests need a PostgreSQL "
                        "(.ci/run starts a throwaway cluster)", pytrace=False)
        pytest.skip("no PostgreSQL: set FACEGATE_TEST_PG_URL=postgresql://USER@HOST:PORT/DB (.ci/run starts one)")
    return url


@contextmanager
def fresh_database():
    """A new, empty database on the test server -> its URL; dropped at the end."""
    import psycopg

    url = server_url()
    name = f"facegate_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
