"""The controller's HTTP API against its own OpenAPI schema: `fleet serve` follows a copy of the
example (its providers pointed at closed loopback ports, so every observation is quickly
unknown), and schemathesis sends each operation a bounded number of generated requests, valid and
invalid, with an operator's token. No answer may be a 5xx, carry an undocumented status or
content type, or break the schema it documents."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from controller_testing import serving_offline
from fleet_testing import ROOT, copy_example
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import checks
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

OPS = "ops-canary-token-91c4e0"
DASHBOARDS = "dashboards-canary-token-4b7d2a"
WEBHOOK_SECRET = "webhook-canary-secret-6e1f"
CANARIES = (OPS, DASHBOARDS, WEBHOOK_SECRET)
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


@dataclass
class Served:
    """A `fleet serve` process, where it listens, and its log."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`fleet serve` on a copy of the example, once its first pass is done (nothing queued)."""
    directory = tmp_path_factory.mktemp("api-schema")
    work = copy_example(directory / "work")
    tokens = {
        "FLEET_API_TOKEN_OPS": OPS,
        "FLEET_API_TOKEN_DASHBOARDS": DASHBOARDS,
        "FLEET_WEBHOOK_SECRET_GITHUB": WEBHOOK_SECRET,
        "FLEET_GITLAB_WEBHOOK_TOKEN": WEBHOOK_SECRET,
    }
    with serving_offline(directory, work, 3600, tokens) as (process, log, port):
        server = Served(f"http://127.0.0.1:{port}", process, log)
        with server.client() as client:
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"fleet serve is not ready: {log.read_text()[-3000:]}"
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/readyz").status_code == 200:
                        queue = client.get("/api/v1/status", headers=_bearer(OPS)).json()["queue"]
                        if not queue["running"] and not queue["depth"]:
                            break
                time.sleep(0.2)
        yield server
    text = log.read_text()
    for canary in CANARIES:
        assert canary not in text, "a secret reached the controller's log"
    assert "Traceback" not in text, text[-3000:]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def served_schema(served: Served) -> Any:
    """The schema as the running controller serves it."""
    config = SchemathesisConfig.from_dict({"request-timeout": 30})
    return schemathesis.openapi.from_url(f"{served.url}/openapi.json", config=config)


def _operations() -> list[Any]:
    """Each operation of the checked-in schema (the same as the served one, another test says),
    with the generation modes that can make a request for it: invalid requests only where there
    is a parameter or a body to get wrong."""
    cases = []
    for path, methods in json.loads((ROOT / "schemas" / "openapi.json").read_text())["paths"].items():
        for method, operation in methods.items():
            modes = [GenerationMode.POSITIVE]
            if operation.get("parameters") or operation.get("requestBody"):
                modes.append(GenerationMode.NEGATIVE)
            for mode in modes:
                cases.append(pytest.param(method.upper(), path, mode, id=f"{method.upper()} {path} {mode}"))
    return cases


@pytest.mark.parametrize(("method", "path", "mode"), _operations())
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.data())
def test_no_answer_is_a_server_error_or_breaks_the_schema(
    served: Served, served_schema: Any, method: str, path: str, mode: GenerationMode, data: st.DataObject
) -> None:
    """Every request carries the operator's token, and a webhook delivery the secret (a GitHub
    body is signed), so that the fuzzed input reaches the handlers behind the authentication."""
    case = data.draw(served_schema[path][method].as_strategy(generation_mode=mode))
    headers = _bearer(OPS)
    if case.path == "/webhooks/github" and isinstance(case.body, (dict, list, str, int, float, bool)):
        raw = json.dumps(case.body).encode()
        case.body = raw
        signature = hmac.new(WEBHOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        headers["X-Hub-Signature-256"] = f"sha256={signature}"
    if case.path == "/webhooks/gitlab":
        headers["X-Gitlab-Token"] = WEBHOOK_SECRET
    response = case.call_and_validate(base_url=served.url, headers=headers, checks=CHECKS)
    _assert_discreet(response.text + str(response.headers))
    if mode is GenerationMode.POSITIVE:
        assert response.status_code != 401, "a request with the right credentials was refused"


def _assert_discreet(answer: str) -> None:
    assert "Traceback" not in answer and 'File "' not in answer, answer
    for canary in CANARIES:
        assert canary not in answer, "an answer quoted a secret"


def test_a_request_without_a_token_is_told_to_bring_a_bearer_token(served: Served) -> None:
    with served.client() as client:
        for headers in ({}, {"Authorization": f"Basic {OPS}"}, _bearer(f"{OPS}-not")):
            answer = client.get("/api/v1/status", headers=headers)
            assert answer.status_code == 401, answer.text
            assert answer.headers["WWW-Authenticate"] == "Bearer"
            assert isinstance(answer.json()["detail"], str)
            _assert_discreet(answer.text + str(answer.headers))


@pytest.mark.parametrize(
    ("method", "path", "token", "body", "status"),
    [
        pytest.param("GET", "/api/v1/resources?selector=a%20b%20c", OPS, None, 400, id="unparsable selector"),
        pytest.param(
            "GET", "/api/v1/runs/99999999999999999999", OPS, None, 422, id="run id over the store's"
        ),
        pytest.param("GET", "/api/v1/runs/424242", DASHBOARDS, None, 404, id="no such run"),
        pytest.param("GET", "/api/v1/resources/machine/none", DASHBOARDS, None, 404, id="no such resource"),
        pytest.param("POST", "/api/v1/poll", DASHBOARDS, None, 403, id="read role on an operator endpoint"),
        pytest.param("POST", "/api/v1/reconcile", OPS, b"{", 422, id="body not JSON"),
        pytest.param(
            "POST",
            "/api/v1/reconcile",
            OPS,
            {"targets": ["machine/none"], "reason": "x"},
            400,
            id="no such target",
        ),
        pytest.param(
            "POST", "/api/v1/suspend", OPS, {"selector": "!", "reason": "x"}, 400, id="bad selector"
        ),
        pytest.param("POST", "/api/v1/resume", OPS, {"reason": OPS}, 422, id="nothing named"),
        pytest.param("POST", "/webhooks/github", None, {"ref": OPS}, 401, id="unsigned webhook"),
    ],
)
def test_an_error_answer_never_carries_a_traceback_or_a_token(
    served: Served, method: str, path: str, token: str | None, body: Any, status: int
) -> None:
    headers = _bearer(token) if token else {}
    content = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
    if content is not None:
        headers["Content-Type"] = "application/json"
    with served.client() as client:
        answer = client.request(method, path, headers=headers, content=content)
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"] == "application/json"
    assert set(answer.json()) <= {"detail", "result"}, answer.text
    _assert_discreet(answer.text + str(answer.headers))
