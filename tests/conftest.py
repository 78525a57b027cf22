from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from skuflow.messaging import SKUFLOW, Broker, BrokerOptions, create_broker, new_id
from tests.support.rabbitmq import RabbitMQ

# Short retry delays keep the retry tests quick; the mechanism is the same as with the defaults.
TEST_OPTIONS = BrokerOptions(retry_delays=(0.2, 0.4), prefetch=8, publish_timeout=20, shutdown_grace=5)


@pytest.fixture(scope="session")
def rabbitmq() -> RabbitMQ:
    """The real broker. Missing: a skip on a developer's machine, a failure in CI (never a silent skip)."""
    broker = RabbitMQ.from_env()
    problem = broker.problem()
    if problem:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI needs RabbitMQ: {problem}", pytrace=False)
        pytest.skip(problem)
    return broker


@pytest.fixture
def amqp_url(rabbitmq: RabbitMQ) -> Iterator[str]:
    """A fresh virtual host for one test, deleted afterwards."""
    vhost = rabbitmq.create_vhost()
    try:
        yield rabbitmq.url_for(vhost)
    finally:
        rabbitmq.delete_vhost(vhost)


@pytest.fixture(params=["memory", pytest.param("amqp", marks=pytest.mark.amqp)])
def broker_url(request: pytest.FixtureRequest) -> str:
    """Each conformance test runs against both brokers: the in-process one and a real RabbitMQ."""
    if request.param == "memory":
        return f"memory://test-{new_id()}"
    return str(request.getfixturevalue("amqp_url"))


BrokerFactory = Callable[..., Awaitable[Broker]]


@pytest.fixture
async def make_broker(broker_url: str) -> AsyncIterator[BrokerFactory]:
    """Open connected brokers (with the system topology declared) on the test's broker; close them all."""
    opened: list[Broker] = []

    async def open_broker(app_id: str = "test", options: BrokerOptions = TEST_OPTIONS) -> Broker:
        broker = create_broker(broker_url, app_id, options)
        await broker.connect()
        opened.append(broker)
        await broker.declare(SKUFLOW)
        return broker

    yield open_broker
    for broker in reversed(opened):
        await broker.close()
