"""Fixtures for the HTTP API: an app on the test database and keys of every role."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.app import create_app
from api.auth import ASSIGNABLE_ROLES, create_api_key
from api.settings import Settings


@pytest.fixture(scope="session")
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def keys(engine: Engine) -> dict[str, str]:
    """One live API key per role, by role name."""
    with engine.begin() as conn:
        return {role: create_api_key(conn, role, f"test {role}")[1] for role in ASSIGNABLE_ROLES}


@pytest.fixture(scope="session")
def headers(keys: dict[str, str]) -> dict[str, dict[str, str]]:
    """`Authorization` headers per role name; `headers["anonymous"]` is empty."""
    return {"anonymous": {}} | {
        role: {"Authorization": f"Bearer {key}"} for role, key in keys.items()
    }
