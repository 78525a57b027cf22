"""The route table (skuflow.messaging.routes) against the services that bind to it and the messages that
publishers build from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pydantic
import pytest
from hypothesis import given
from pydantic import SecretStr

from skuflow.catalog.service import build_runtime as catalog_runtime
from skuflow.inventory.service import build_runtime as inventory_runtime
from skuflow.messaging import ROUTES, SKUFLOW, Envelope, Outgoing, Subscription, routes
from skuflow.platform.settings import Settings
from skuflow.users.service import build_app as users_app
from tests.support.json_schema import bodies

SERVICES = ("inventory", "catalog", "users")


def subscriptions_of(service: str, data_dir: Path) -> list[Subscription[Any]]:
    """What a service subscribes to, as its wiring binds it (built, not started)."""
    secrets = {"warehouse_secret": SecretStr("w"), "admin_secret": SecretStr("a")}
    settings = Settings(broker_url="memory://", data_dir=data_dir, **secrets)  # type: ignore[arg-type]
    if service == "inventory":
        return inventory_runtime(settings).subscriptions
    if service == "catalog":
        return catalog_runtime(settings).subscriptions
    return list(users_app(settings).state.runtime.subscriptions)


@pytest.fixture(scope="module")
def subscriptions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Subscription[Any]]]:
    return {service: subscriptions_of(service, tmp_path_factory.mktemp(service)) for service in SERVICES}


def test_every_declared_queue_has_one_handler_and_every_handler_a_declared_queue(subscriptions):
    declared = sorted(queue.name for queue in SKUFLOW.queues)
    handled = sorted(subscription.queue for service in SERVICES for subscription in subscriptions[service])
    assert handled == declared


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_consumes_the_queues_the_table_gives_it_with_their_message_types(subscriptions, service):
    bound = {subscription.queue: subscription.message_type for subscription in subscriptions[service]}
    assert bound == {route.name: route.message.name for route in routes.consumed_by(service)}


def test_every_queue_is_bound_to_its_message_types_exchange_and_every_type_has_a_queue():
    for route in ROUTES:
        assert route.queue.exchange == route.message.exchange
    assert {route.message.name for route in ROUTES} == {message.name for message in routes.MESSAGE_TYPES}


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.name)
def test_each_consumers_model_has_the_contracts_fields_and_required_ones(subscriptions, route):
    model = _model_of(subscriptions, route)
    schema = route.message.schema
    assert set(model.model_fields) == set(schema["properties"])
    assert {name for name, field in model.model_fields.items() if field.is_required()} == set(schema["required"])


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.name)
def test_each_consumers_model_takes_every_body_the_contracts_schema_allows(subscriptions, route):
    model = _model_of(subscriptions, route)

    @given(bodies(route.message.schema))
    def takes(body: dict[str, Any]) -> None:
        model.model_validate_json(pydantic.TypeAdapter(dict).dump_json(body))

    takes()


def _model_of(subscriptions: dict[str, list[Subscription[Any]]], route: routes.Route) -> type[pydantic.BaseModel]:
    (subscription,) = [s for s in subscriptions[route.consumer] if s.queue == route.name]
    return subscription.model


BUILT_COMMAND = Envelope.new("recalculate_sku", {"sku": "SKU-1"}, app_id="inventory", correlation_id="c-1")
IDS = {"flow_id": "0190c7f3a2b4c5d6e7f8a9b0c1d2e3f4", "correlation_id": "c-1"}
BUILT = {
    "sku_processed": routes.sku_processed("SKU-1"),
    "recalculate_sku": routes.recalculate_sku("SKU-1", **IDS),
    "update_sku_availability": routes.update_sku_availability("SKU-1", available_for_sale=3, revision=2, **IDS),
    "update_wishlists_for_sku": routes.update_wishlists_for_sku("SKU-1", available_for_sale=0, revision=2, **IDS),
    "step_finished": routes.step_finished(
        flow_id=IDS["flow_id"],
        sku="SKU-1",
        step="recalculate_sku",
        revision=2,
        error=None,
        sender="catalog",
        command=BUILT_COMMAND,
    ),
}


def test_there_is_one_constructor_per_message_type():
    assert sorted(BUILT) == sorted(message.name for message in routes.MESSAGE_TYPES)


@pytest.mark.parametrize("message", routes.MESSAGE_TYPES, ids=lambda message: message.name)
def test_a_constructed_message_has_a_body_of_its_schema_and_reaches_exactly_its_queues(message):
    outgoing: Outgoing = BUILT[message.name]
    assert outgoing.envelope.type == message.name
    assert outgoing.envelope.app_id in message.producers
    jsonschema.validate(outgoing.envelope.json(), message.schema)
    reached = [queue.name for queue in SKUFLOW.bound_to(outgoing.exchange, outgoing.routing_key)]
    assert reached == [route.name for route in ROUTES if route.message == message]


def test_commands_carry_their_flow_and_correlation_ids_and_a_reply_its_commands():
    command = BUILT["update_sku_availability"]
    assert command.envelope.headers == {"flow_id": IDS["flow_id"]}
    assert command.envelope.correlation_id == "c-1"
    reply = BUILT["step_finished"].envelope
    assert (reply.correlation_id, reply.causation_id) == ("c-1", BUILT_COMMAND.message_id)
