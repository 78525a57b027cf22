"""Property-based fuzzing of each service's OpenAPI document (schemathesis), against the real running services.

Every operation is called with generated input, valid (positive) and invalid (negative), without a token,
with the admin client's token, and (on a user's own routes) with that user's token. Each answer must be no
5xx, a status code and a body its operation documents, and, when it is a 4xx, leave every table of every
service as it was. CI runs a few examples per operation and variant; `SKUFLOW_FUZZ_EXAMPLES=500` runs long.
The figures are printed at the end (run with `-s` to see them) and kept in docs/hardening.md.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, reject, settings
from jsonschema import Draft202012Validator
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import AcceptedNegativeData, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import MetaData, func, select

from skuflow.catalog.db import metadata as catalog_tables
from skuflow.inventory.db import metadata as inventory_tables
from skuflow.messaging.dead_letters import WORK_QUEUES
from skuflow.platform.runtime import ServiceRuntime
from skuflow.users.db import metadata as users_tables
from tests.services.conftest import System, settled
from tests.support.waiting import wait_until

T = TypeVar("T")
EXAMPLES = int(os.environ.get("SKUFLOW_FUZZ_EXAMPLES", "4"))  # per operation, token variant and mode
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
TABLES: dict[str, MetaData] = {"inventory": inventory_tables, "catalog": catalog_tables, "users": users_tables}
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)

pytestmark = pytest.mark.timeout(1800)  # the long run; CI's short one takes seconds per service


def _valid_on_the_wire(failure: Exception, case: Any, operation: Any) -> bool:
    """Whether `failure` is schemathesis taking a "negative" query value for one that is valid as sent: a
    query string holds text only, so `false` generated as JSON's false arrives as the text "false", which
    may be a valid SKU (schemathesis/schemathesis#2312 and its kin). Every other failure counts."""
    if not isinstance(failure, AcceptedNegativeData) or "in query" not in failure.message:
        return False
    schemas = {p.name: p.definition.get("schema", {}) for p in operation.iter_parameters() if p.location == "query"}
    for name, value in (case.query or {}).items():
        if name not in schemas:
            return False  # an undeclared parameter: schemathesis may rightly expect a refusal
        sent = [_as_sent(item) for item in value] if isinstance(value, list) else [_as_sent(value)]
        valid = Draft202012Validator(schemas[name]).is_valid
        if not (valid(sent) or (len(sent) == 1 and valid(sent[0]))):  # one value: a list of one, or a scalar
            return False
    return True


def _as_sent(value: Any) -> Any:
    """A query value as the server reads it: text (requests writes booleans as True/False: lower-case here as
    schemathesis's serializer does)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


@dataclass
class Figures:
    operations: int = 0
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Variant:
    """Who calls: no token, the admin client, or a user on their own routes."""

    name: str
    headers: dict[str, str]
    path_parameters: dict[str, str]


class Fuzzer:
    """Runs in a worker thread (schemathesis calls with `requests`, which blocks) while the services go on
    serving in the test's event loop; it asks that loop for the row counts."""

    def __init__(self, system: System, loop: asyncio.AbstractEventLoop, service: str, variants: list[Variant]):
        self.system = system
        self.loop = loop
        self.service = service
        self.variants = variants
        self.base_url = getattr(system, service).url
        self.session = requests.Session()
        self.figures = Figures()
        self.rows: dict[str, int] = {}

    def on_loop(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def run(self) -> Figures:
        try:
            return self._run()
        finally:
            self.session.close()

    def _run(self) -> Figures:
        started = time.monotonic()
        schema = schemathesis.openapi.from_url(f"{self.base_url}/openapi.json")
        self.rows = self.on_loop(quiet_row_counts(self.system))
        for result in schema.get_all_operations():
            operation = result.ok()
            self.figures.operations += 1
            has_input = bool(list(operation.iter_parameters())) or bool(operation.body)
            for variant in self.variants:
                if variant.path_parameters and "{user_id}" not in operation.path:
                    continue
                for mode in MODES if has_input else MODES[:1]:  # no input, nothing to make invalid
                    self.fuzz(operation, variant, mode)
        self.figures.seconds = time.monotonic() - started
        return self.figures

    def fuzz(self, operation: Any, variant: Variant, mode: GenerationMode) -> None:
        path_parameters = {k: v for k, v in variant.path_parameters.items() if f"{{{k}}}" in operation.path}
        strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters or None)

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
        )
        @given(case=strategy)
        def one_request(case: Any) -> None:
            try:
                response = case.call(base_url=self.base_url, session=self.session, headers=variant.headers, timeout=30)
            except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError):
                reject()  # the client library would not send it: nothing reached the service
            self.figures.requests += 1
            self.figures.statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=CHECKS, headers=variant.headers)
            except FailureGroup as group:
                if not all(_valid_on_the_wire(failure, case, operation) for failure in group.exceptions):
                    raise
            before, self.rows = self.rows, self.on_loop(quiet_row_counts(self.system))
            if 400 <= response.status_code < 500:
                changed = {
                    table: (before[table], self.rows[table]) for table in before if before[table] != self.rows[table]
                }
                assert not changed, f"answered {response.status_code} yet changed rows (before, after): {changed}"

        label = f"{operation.method.upper()} {operation.path} ({variant.name}, {mode.value})"
        try:
            one_request()
        except (Exception, FailureGroup) as error:  # collected: one run reports every operation that fails
            self.figures.failures.append(f"{label}: {error}")


async def quiet_row_counts(system: System) -> dict[str, int]:
    """Rows per table of every service, once nothing is in flight (outboxes relayed, queues empty, every
    delivery settled), so that what an earlier request set going is not taken for this one's doing."""
    runtimes: list[ServiceRuntime] = [getattr(system, name).app.state.runtime for name in TABLES]
    await wait_until(lambda: _quiet(system, runtimes), timeout=30, what="nothing in flight")
    counts: dict[str, int] = {}
    for runtime, (service, metadata) in zip(runtimes, TABLES.items(), strict=True):
        async with runtime.db.reading() as session:
            for table in metadata.sorted_tables:
                counts[f"{service}.{table.name}"] = int(
                    await session.scalar(select(func.count()).select_from(table)) or 0
                )
    return counts


async def _quiet(system: System, runtimes: list[ServiceRuntime]) -> bool:
    for runtime in runtimes:
        if runtime.outbox is not None and await runtime.outbox.pending() > 0:
            return False
        if not settled(runtime.broker.stats):
            return False
    for queue in WORK_QUEUES:
        if await system.observer.depth(queue) > 0:
            return False
    return True


async def variants_for(system: System, service: str) -> list[Variant]:
    user_id, user_token = await system.sign_up("fuzz@example.com")
    variants = [
        Variant("no token", {}, {}),
        Variant("admin token", {"Authorization": f"Bearer {await system.admin_token()}"}, {}),
    ]
    if service == "users":
        variants.append(Variant("own user token", {"Authorization": f"Bearer {user_token}"}, {"user_id": user_id}))
    return variants


@pytest.mark.parametrize("service", ["inventory", "catalog", "users"])
async def test_no_input_makes_a_service_fail_or_break_its_document_or_record_on_a_4xx(
    system: System, service: str
) -> None:
    fuzzer = Fuzzer(system, asyncio.get_running_loop(), service, await variants_for(system, service))
    figures = await asyncio.to_thread(fuzzer.run)

    fives = sum(count for status, count in figures.statuses.items() if status >= 500)
    print(
        f"\n{service} ({system.stack.name}): {figures.operations} operations, {figures.requests} requests, "
        f"{fives} 5xx, {len(figures.failures)} failing, {figures.seconds:.1f} s; statuses {dict(figures.statuses)}"
    )
    assert not figures.failures, "\n\n".join(figures.failures)
    assert figures.requests >= figures.operations > 0


@pytest.mark.amqp
@pytest.mark.parametrize("stack", ["production"], indirect=True)
async def test_text_with_a_nul_is_refused_as_invalid_input_and_records_nothing(system: System) -> None:
    """Found by this fuzzer on PostgreSQL, which cannot store U+0000 (SQLite can, so the embedded stack
    takes such text, until the input models refuse control characters): each was a 500."""
    admin = await system.admin_token()
    before = await quiet_row_counts(system)
    product = {"name": "Blue\x00mug", "price": "9.90"}
    status, body, _ = await system.call("PUT", "/v1/products/SKU-1", token=admin, json=product, service="catalog")
    assert status == 422, body
    user = {"email": "nul@example.com", "name": "Nul\x00Name", "password": "correct horse battery"}
    status, body, _ = await system.call("POST", "/v1/users", json=user, service="users")
    assert status == 422, body
    form = {"grant_type": "password", "username": "a\x00b@example.com", "password": "whatever it is"}
    status, body, _ = await system.call("POST", "/v1/auth/token", data=form, service="users")
    assert (status, body["error"]) == (400, "invalid_request"), "the token endpoint answers in RFC 6749's words"
    assert "NUL" in body["error_description"]
    assert await quiet_row_counts(system) == before


async def test_a_json_body_that_is_not_utf8_is_invalid_input(system: System) -> None:
    """Found by this fuzzer: FastAPI answered 400, which no operation documents; invalid input is 422."""
    admin = await system.admin_token()
    headers = {"Content-Type": "application/json"}
    status, body, _ = await system.call(
        "PUT", "/v1/products/SKU-1", token=admin, headers=headers, data=b'{"name": "\xff"}', service="catalog"
    )
    assert (status, body["detail"][0]["loc"]) == (422, ["body"]), body
    assert "not UTF-8" in body["detail"][0]["msg"]
