"""What the consumers do with bodies no producer of ours sends (issue 14, defect 10): every message is either
handled or dead-lettered at once with a reason, never retried, when it can never succeed.

Each test publishes raw bodies straight onto one queue of the running services and reads the outcome from
the consuming service's own counts and from the queue's DLQ. The fuzzer (test_message_fuzz.py) goes on from
these hand-picked cases.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from skuflow.messaging import FLOW_ID, FLOW_REPLIES
from skuflow.platform.identifiers import IDENTIFIER_RULE
from tests.services.conftest import System
from tests.support.messages import Tally, message_type, publish_raw, raw_envelope, take_dead_letters

A_COMMAND = {"sku": "GHOST-1", "available_for_sale": 1, "revision": 1}
A_REPLY = {"flow_id": "0" * 32, "sku": "GHOST-1", "step": "update_sku_availability", "revision": 1, "ok": True}


async def dead_lettered_at_once(system: System, queue: str, body: Any, headers: dict[str, Any] | None = None) -> str:
    """Publish `body` (JSON-encoded unless bytes) to `queue`; assert that it went to the DLQ on its first
    attempt, with nothing retried or acked; answer the reason."""
    tally = Tally.now(system)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    envelope = raw_envelope(message_type(queue), raw, headers=headers)
    await publish_raw(system.observer, queue, envelope)
    counts = await tally.settled({queue: 1})
    letters = await take_dead_letters(system.observer, queue)
    assert counts[queue] == {"acked": 0, "retried": 0, "dead_lettered": 1}, (body, counts[queue], letters)
    [letter] = letters
    assert (letter.message_id, letter.attempts) == (envelope.message_id, 1)
    return letter.reason


SKU_QUEUES = [
    ("inventory.sku_processed", {}),
    ("catalog.sku_processed", {}),
    ("users.sku_processed", {}),
    ("inventory.recalculate_sku", {}),
    ("catalog.update_sku_availability", {"available_for_sale": 1, "revision": 1}),
    ("users.update_wishlists_for_sku", {"available_for_sale": 1, "revision": 1}),
    (FLOW_REPLIES, {key: value for key, value in A_REPLY.items() if key != "sku"}),
]


@pytest.mark.parametrize(("queue", "rest"), SKU_QUEUES)
async def test_a_sku_outside_the_identifier_rule_is_dead_lettered_at_once_on_every_queue(
    system: System, queue: str, rest: dict[str, Any]
):
    # A space, a letter outside ASCII, a leading dash, a final newline, one character too many, a path.
    for sku in ("SKU 1", "é", "-SKU", "SKU-1\n", "x" * 65, "../x"):
        reason = await dead_lettered_at_once(system, queue, {"sku": sku, **rest})
        assert reason.startswith(f"invalid {message_type(queue)} body: sku: "), reason
        assert IDENTIFIER_RULE in reason, reason


@pytest.mark.parametrize("queue", ["catalog.update_sku_availability", "users.update_wishlists_for_sku"])
async def test_numbers_a_database_cannot_hold_or_not_integers_are_dead_lettered_at_once(system: System, queue: str):
    """A revision is a 32-bit column in every service, `available_for_sale` a 64-bit one: beyond them the
    message used to be retried until its attempts ran out (SQLite and PostgreSQL refuse the number)."""
    for field, value in [
        ("revision", 2**31),
        ("revision", 2**63),
        ("available_for_sale", 2**63),
        ("revision", -1),
        ("revision", "5"),  # a JSON string, not a number: the contract says <int>
        ("revision", 1.0),
        ("available_for_sale", True),
    ]:
        reason = await dead_lettered_at_once(system, queue, {**A_COMMAND, field: value})
        assert f": {field}: " in reason, (field, value, reason)
    for huge in (b"1e309", b"-1e309", b"9" * 5000):  # not numbers Python's int or float can be given
        body = b'{"sku": "GHOST-1", "available_for_sale": 1, "revision": %s}' % huge
        reason = await dead_lettered_at_once(system, queue, body)
        assert reason.startswith(f"invalid {message_type(queue)} body"), reason


async def test_a_step_finished_reply_is_held_to_the_contract(system: System):
    for field, value in [
        ("flow_id", ""),
        ("flow_id", "f" * 65),
        ("flow_id", "a flow"),
        ("step", "delete_everything"),
        ("revision", -1),
        ("revision", 2**31),
        ("revision", "1"),
        ("ok", "true"),
        ("ok", 1),
        ("error", "e" * 1001),
        ("error", "a NUL\x00 PostgreSQL cannot store"),
        ("error", 42),
    ]:
        reason = await dead_lettered_at_once(system, FLOW_REPLIES, {**A_REPLY, field: value})
        assert f"body: {field}" in reason, (field, value, reason)


@pytest.mark.parametrize("queue", ["catalog.update_sku_availability", "users.update_wishlists_for_sku"])
async def test_a_command_whose_flow_id_header_is_no_flow_id_is_dead_lettered_and_no_reply_goes_out(
    system: System, queue: str
):
    """The owner performs the command (idempotent), but cannot reply to a flow id the reply may not carry:
    it used to reply anyway, and the reply died in inventory's DLQ, far from the command that carried it."""
    for flow_id in ("f" * 65, "a flow", 12):
        reason = await dead_lettered_at_once(system, queue, A_COMMAND, headers={FLOW_ID: flow_id})
        assert reason.startswith("rejected: the flow_id header"), reason
        assert IDENTIFIER_RULE in reason, reason
    assert await take_dead_letters(system.observer, FLOW_REPLIES) == []


@pytest.mark.parametrize(
    "headers",
    [
        {"x-death": [{"count": "x", "reason": "expired", "queue": "catalog.sku_processed.retry.200ms"}]},
        {"x-death": [{"count": 1, "reason": b"\xff", "queue": b"\xfe"}]},
        {"x-death": ["nonsense"], "skuflow-retries": "many"},
    ],
)
async def test_garbled_retry_headers_do_not_stop_a_valid_message_from_being_handled(
    system: System, headers: dict[str, Any]
):
    """The retry count is read from headers a publisher can set: unreadable ones count as no retry. They
    used to raise while settling, and the valid message went to the DLQ without a word of why."""
    tally = Tally.now(system)
    envelope = raw_envelope("sku_processed", b'{"sku": "GHOST-1"}', headers=headers)
    await publish_raw(system.observer, "catalog.sku_processed", envelope)
    counts = await tally.settled({"catalog.sku_processed": 1})
    assert counts["catalog.sku_processed"] == {"acked": 1, "retried": 0, "dead_lettered": 0}
    assert await take_dead_letters(system.observer, "catalog.sku_processed") == []


@pytest.mark.parametrize(
    ("extra", "shown"),
    [
        ({f"field{n}": None for n in range(2000)}, "and 1995 more"),
        ({"K" * 100_000: None}, "(100000 characters)"),
    ],
)
async def test_the_reason_for_a_body_of_many_or_long_unknown_fields_stays_short(
    system: System, extra: dict[str, Any], shown: str
):
    """The reason used to list every problem in full: 2,000 unknown fields, or one with a name of 100,000
    characters, made a header of as many characters in every dead letter."""
    reason = await dead_lettered_at_once(system, "catalog.sku_processed", {"sku": "GHOST-1", **extra})
    assert reason.startswith("invalid sku_processed body: ")
    assert "Extra inputs are not permitted" in reason
    assert shown in reason
    assert len(reason) < 1000, len(reason)
