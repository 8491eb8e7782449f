"""schemathesis against `/api`: every operation fuzzed from its OpenAPI declaration.

No request a client can send may get a 5xx, and every answer must be one the document
declares: its status code, its media type, its body's schema and its headers. One pass
runs with an admin key (every endpoint reachable; schemathesis also tries some cases
without it or with a made-up key), a smaller one anonymously (what the public sees, and
the 401s).

The run is bounded and reproducible: a fixed seed, derandomized generation and a few
examples per operation. Writes land in a scratch database of this module's own holding
the small demo world (seed 7), never in the session's shared one. Ids, codes and places
of that world are offered to the generator alongside random values, so the fuzzing
reaches records that exist and not only the 404s.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import Engine, create_engine

from api.app import create_app
from api.auth import create_api_key
from api.db import create_scratch_database, drop_scratch_database, make_engine
from api.migrate import upgrade
from api.services.demo import load_demo
from api.services.features import COLLECTIONS
from api.settings import Settings
from geo.catalogue import INCIDENT_CATEGORIES

SEED = 20240808
ADMIN_EXAMPLES = 10
ANONYMOUS_EXAMPLES = 4
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

# Records of the small demo world (吉首市, seed 7): its first village and grids, the
# first serial ids, a point in 乾州 and the zoom-10 tile holding it.
DEMO_VALUES: dict[str, list[Any]] = {
    "collections": sorted(COLLECTIONS),
    "grid_codes": ["433101002001001", "433101002001002", "433101201209003"],
    "village_codes": ["433101002001", "433101201209"],
    "ids": [1, 2, 3],
    "feature_ids": ["1", "433101002001001", "433101002001", "433101"],
    "categories": [category.code for category in INCIDENT_CATEGORIES],
    "lon": [109.73],
    "lat": [28.31],
    "tile_z": [10],
    "tile_x": [824],
    "tile_y": [428],
}


def _from(dictionary: str, probability: float = 0.7) -> dict[str, Any]:
    return {"dictionary": dictionary, "probability": probability}


DEMO_PARAMETERS: dict[str, Any] = {
    "path.collectionId": _from("collections", 0.9),
    "path.camera_id": _from("ids"),
    "path.incident_id": _from("ids"),
    "path.service_request_id": _from("ids"),
    "path.service_code": _from("categories"),
    "path.featureId": _from("feature_ids"),
    "path.z": _from("tile_z"),
    "path.x": _from("tile_x"),
    "path.y": _from("tile_y"),
    "query.lon": _from("lon", 0.5),
    "query.lat": _from("lat", 0.5),
    "body.category": _from("categories"),
    "body.service_code": _from("categories"),
    "body.lon": _from("lon", 0.5),
    "body.long": _from("lon", 0.5),
    "body.lat": _from("lat", 0.5),
}
BY_OPERATION: list[dict[str, Any]] = [
    {
        "include-path-regex": r"^/v1/grids/\{code\}",
        "parameters": {"path.code": _from("grid_codes")},
    },
    {"include-path-regex": r"^/v1/villages/", "parameters": {"path.code": _from("village_codes")}},
    # Each collection's own items path repeats `/collections/{collectionId}/items` with
    # the collection's property filters added: random cases only, fewer of them.
    {
        "include-path-regex": r"^/collections/[a-z0-9_]+/items$",
        "phases": {"coverage": {"enabled": False}},
        "generation": {"max-examples": 5},
    },
    # Recomputing every grid's coverage takes seconds, whatever the request.
    {
        "include-path": "/v1/coverage/recompute",
        "phases": {"coverage": {"enabled": False}},
        "generation": {"max-examples": 1},
    },
]


def served_api_document() -> dict[str, Any]:
    """The document `/api` serves; reading it needs no database, so the app's lifespan
    (which connects) is not started here."""
    app = create_app(Settings(database_url="postgresql://unused@localhost/unused"))
    return TestClient(app).get("/api").json()


def fuzz_schema(
    max_examples: int, *, boundaries: bool, made_up_keys: bool
) -> schemathesis.schemas.BaseSchema:
    """The served document with the run's bounds: `max_examples` random cases per
    operation; with `boundaries` schemathesis's coverage phase too (each parameter's edge
    and wrong values, and unexpected methods), which finds most and costs most; with
    `made_up_keys` missing or random `Authorization: Bearer` headers on some cases."""
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            # Generation time is not under test, and CI shares its two cores.
            "suppress-health-check": ["too_slow"],
            "dictionaries": {name: {"values": values} for name, values in DEMO_VALUES.items()},
            "parameters": DEMO_PARAMETERS,
            "generation": {
                "max-examples": max_examples,
                "deterministic": True,
                "database": "none",
                "with-security-parameters": made_up_keys,
            },
            "phases": {"coverage": {"enabled": boundaries}, "stateful": {"enabled": False}},
            "operations": BY_OPERATION,
        }
    )
    return schemathesis.openapi.from_dict(served_api_document(), config=config)


admin_api = fuzz_schema(ADMIN_EXAMPLES, boundaries=True, made_up_keys=True)
# Anonymously most operations stop at the key check, so random cases suffice.
anonymous_api = fuzz_schema(ANONYMOUS_EXAMPLES, boundaries=False, made_up_keys=False)


@pytest.fixture(scope="module")
def fuzz_database_url(server_url: str) -> Iterator[str]:
    """The small demo world in a database of this module's own: the fuzzer writes to it."""
    url = create_scratch_database(server_url, prefix="gridcover_fuzz")
    upgrade(url)
    loader = create_engine(url)
    load_demo(loader, "small", seed=7)
    loader.dispose()
    yield url
    drop_scratch_database(server_url, url)


@pytest.fixture(scope="module")
def fuzz_engine(fuzz_database_url: str) -> Iterator[Engine]:
    engine = make_engine(fuzz_database_url, Settings(database_url=fuzz_database_url))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def fuzz_app(fuzz_database_url: str, fuzz_engine: Engine) -> Iterator[FastAPI]:
    """The service on the scratch database; schemathesis starts its lifespan on the first
    request and this ends it before the database goes."""
    yield create_app(Settings(database_url=fuzz_database_url), fuzz_engine)
    shutdown_lifespans()


@pytest.fixture(scope="module")
def admin_key(fuzz_engine: Engine) -> tuple[int, str]:
    with fuzz_engine.begin() as conn:
        return create_api_key(conn, "admin", "schemathesis")


@admin_api.parametrize()
def test_api_as_admin(
    case: schemathesis.Case, fuzz_app: FastAPI, admin_key: tuple[int, str]
) -> None:
    key_id, key = admin_key
    if case.path_parameters and case.path_parameters.get("key_id") == key_id:
        return  # revoking the key that drives the run would leave the rest to 401
    case.call_and_validate(app=fuzz_app, headers={"Authorization": f"Bearer {key}"}, checks=CHECKS)


@anonymous_api.parametrize()
def test_api_anonymous(case: schemathesis.Case, fuzz_app: FastAPI) -> None:
    case.call_and_validate(app=fuzz_app, checks=CHECKS)


def test_a_body_that_is_not_utf8_is_a_422_problem(
    client: TestClient, headers: dict[str, dict[str, str]]
) -> None:
    """Found by the fuzzer: FastAPI answered an undecodable JSON body with a bare 400,
    which /api does not declare for body errors (those are 422)."""
    response = client.post(
        "/v1/incidents",
        content=b'{"category": "\xff\xfe"}',
        headers=headers["dispatcher"] | {"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"] == [
        {"field": "body", "in": "body", "reason": "not UTF-8 JSON"}
    ]


# Found by the fuzzer (GET /open311/v2/requests.json?service_code=...\x00...), then looked
# for across the API: a NUL byte reached PostgreSQL, which refuses it in text (a 500).
NUL_PARAMETERS = [
    ("GET", "/v1/grids/a%00b", "anonymous", "code"),
    ("GET", "/v1/grids/a%00b/versions", "anonymous", "code"),
    ("PATCH", "/v1/grids/a%00b", "admin", "code"),
    ("DELETE", "/v1/grids/a%00b", "admin", "code"),
    ("GET", "/v1/grids/a%00b/coverage", "viewer", "code"),
    ("GET", "/v1/villages/a%00b/uncovered", "anonymous", "code"),
    ("GET", "/v1/incidents?category=a%00b", "dispatcher", "category"),
    ("GET", "/v1/stats/incidents?category=a%00b", "dispatcher", "category"),
]


@pytest.mark.parametrize(("method", "url", "role", "field"), NUL_PARAMETERS)
def test_a_nul_byte_in_a_parameter_is_a_400_naming_it(
    client: TestClient,
    headers: dict[str, dict[str, str]],
    method: str,
    url: str,
    role: str,
    field: str,
) -> None:
    response = client.request(method, url, headers=headers[role], json={})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == field


def test_a_nul_byte_in_an_open311_service_code_is_a_400(
    client: TestClient, headers: dict[str, dict[str, str]]
) -> None:
    response = client.get(
        "/open311/v2/requests.json?service_code=a%00b", headers=headers["dispatcher"]
    )
    assert response.status_code == 400
    assert response.json() == [
        {"code": 400, "description": "service_code holds control characters"}
    ]


def _can_be_invalid(schema: dict[str, Any]) -> bool:
    """Whether a parameter of this schema can fail validation (any string is fine for a
    plain string parameter)."""
    return schema.get("type") != "string" or bool(set(schema) - {"type", "title", "description"})


def test_every_operation_declares_its_problems_as_problem_json() -> None:
    """The 400-vs-422 convention of api/app.py, as /api states it: a bad parameter is a
    400 problem, a bad body a 422 problem; FastAPI's own 422 shape never appears."""
    document = served_api_document()
    assert "HTTPValidationError" not in str(document)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            label = f"{method.upper()} {path}"
            responses = operation["responses"]
            for status, response in responses.items():
                if status.startswith(("4", "5")) and not path.startswith("/open311/"):
                    assert list(response.get("content", {})) == ["application/problem+json"], (
                        label,
                        status,
                    )
            if any(
                p["in"] in ("query", "path", "header") and _can_be_invalid(p["schema"])
                for p in operation.get("parameters", [])
            ):
                assert "400" in responses, label
            if "requestBody" in operation and not path.startswith("/open311/"):
                assert {"413", "422"} <= set(responses), label
            if operation.get("security"):
                assert "401" in responses, label
