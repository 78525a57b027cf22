"""Fuzzed message bodies on every queue of the topology, against the running services (issue 14).

Each example publishes a burst of hostile messages straight onto the work queues: bytes that are no JSON,
JSON of the wrong shape, valid bodies with one field dropped, added or replaced by a hostile value (numbers
past 2^63 or 1e309, negative ones, wrong types, unicode and control characters, long strings), a wrong
`type` property, a missing `correlation_id`, a bad `flow_id` header or garbled retry headers, and valid bodies
for SKUs and flows that do not exist. The property: each message is acknowledged if it is valid and
dead-lettered on its first attempt otherwise, with an `x-reason` naming the problem; nothing is retried;
and the consumers keep consuming: after the burst a stock report still reaches catalog and users.

The oracle is the contract, written out here on its own (not the services' models): what a valid body of
each message looks like. CI runs 25 derandomized examples (bursts of 1-24 messages) per stack;
SKUFLOW_FUZZ_EXAMPLES=500 runs it long, and SKUFLOW_FUZZ_FIGURES=<file> writes the counts (queue, kind,
outcome) there as JSON. No shrinking: a failure names the message that broke the property.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from skuflow.messaging import FLOW_ID, FLOW_REPLIES
from skuflow.users.db import sku_availability
from tests.conftest import Stack
from tests.services.conftest import MODES, System
from tests.support.messages import QUEUES, Tally, message_type, publish_raw, raw_envelope, take_dead_letters
from tests.support.waiting import wait_until

EXAMPLES = int(os.environ.get("SKUFLOW_FUZZ_EXAMPLES", "25"))
LONG = "SKUFLOW_FUZZ_EXAMPLES" in os.environ  # a long run explores; CI's run is derandomized: the same each time
FIGURES = os.environ.get("SKUFLOW_FUZZ_FIGURES")
CASE = "x-fuzz-case"  # a header of our own naming each message, which its dead letter keeps
LIVE = "LIVE-"  # the SKUs of the stock reports after each burst; the fuzzer never names one

# -- The contract's bodies (CONTRACT section 2), stated independently of the services' models --------------

IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
STEPS = ("recalculate_sku", "update_sku_availability", "update_wishlists_for_sku")
INT32, INT64 = 2**31 - 1, 2**63 - 1


def is_identifier(value: object) -> bool:
    return isinstance(value, str) and IDENTIFIER.fullmatch(value) is not None and value.isascii()


identifiers = st.from_regex(IDENTIFIER, fullmatch=True).filter(lambda sku: not sku.startswith(LIVE))
error_texts = st.text(max_size=1000).filter(lambda error: "\x00" not in error)

FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "sku_processed": {"sku": identifiers},
    "recalculate_sku": {"sku": identifiers},
    "update_sku_availability": {
        "sku": identifiers,
        "available_for_sale": st.integers(0, INT64),
        "revision": st.integers(1, INT32),
    },
    "step_finished": {
        "flow_id": identifiers,
        "sku": identifiers,
        "step": st.sampled_from(STEPS),
        "revision": st.integers(0, INT32),
        "ok": st.booleans(),
        "error": st.none() | error_texts,
    },
}
FIELDS["update_wishlists_for_sku"] = FIELDS["update_sku_availability"]
OPTIONAL = {"error"}


def valid_body(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    fields = FIELDS[kind]
    return st.fixed_dictionaries(
        {name: value for name, value in fields.items() if name not in OPTIONAL},
        optional={name: value for name, value in fields.items() if name in OPTIONAL},
    )


# -- Hostile values: raw JSON text, so that numbers past what Python's json writes (1e309) can be sent ------

HUGE = ["18446744073709551616", "9223372036854775808", "1e309", "-1e309", "1" + "0" * 400, "NaN", "Infinity"]
texts = st.one_of(
    st.text(max_size=80),  # any unicode, control characters and line separators included
    st.text(st.sampled_from("\x00\n\r\v\x85\u2028\u202e\ufeff /%?#é"), min_size=1, max_size=8),
    st.integers(65, 20_000).map(lambda n: "S" * n),  # long
)


def json_text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except UnicodeEncodeError:
        return json.dumps(value)


any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


# What an AMQP table carries unchanged (integers within 64 bits; pamqp writes a float in 32 bits), as a
# header's value.
header_values = st.one_of(
    texts,
    identifiers,
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False, width=32, allow_subnormal=False),
    st.booleans(),
    st.lists(texts, max_size=3),
)


def hostile_for(kind: str, name: str) -> st.SearchStrategy[str]:
    """Raw JSON values that `name` of a `kind` body may never hold."""
    out_of_range = {
        "available_for_sale": st.sampled_from([-1, INT64 + 1, -(2**63) - 1]),
        "revision": st.sampled_from([-1, INT32 + 1, 2**63] + ([0] if kind != "step_finished" else [])),
    }
    if name in ("sku", "flow_id"):
        values = any_json.filter(lambda value: not is_identifier(value))
    elif name in out_of_range:
        values = out_of_range[name] | any_json.filter(lambda value: not isinstance(value, int) or value is True)
        return values.map(json_text) | st.sampled_from([*HUGE, '"5"', "1.0", "true"])
    elif name == "step":
        values = any_json.filter(lambda value: value not in STEPS)
    elif name == "ok":
        values = any_json.filter(lambda value: not isinstance(value, bool))
    else:  # error: a string of at most 1000 characters without NUL, or null
        long_or_nul = st.sampled_from(["e" * 1001, "an error\x00", "S" * 100_000])
        values = long_or_nul | any_json.filter(lambda value: value is not None and not isinstance(value, str))
    return values.map(json_text) | st.sampled_from(HUGE)


def encode(fields: dict[str, str]) -> bytes:
    """A JSON object from raw JSON values, as UTF-8 (lone surrogates escaped, as a careless producer might)."""
    text = "{" + ",".join(f"{json.dumps(name)}:{value}" for name, value in fields.items()) + "}"
    return text.encode("utf-8", errors="backslashreplace")


def is_json_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False


# -- Cases ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    queue: str
    kind: str  # what was done to the message, for the figures
    body: bytes
    valid: bool  # the contract says the consumer must handle it (ack); otherwise dead-letter it at once
    reason: str = ""  # how its x-reason must begin, when dead-lettered
    type: str | None = None  # the `type` property, when not the queue's own
    headers: dict[str, Any] = field(default_factory=dict)
    correlation_id: str | None = None
    replies: int = 0  # step_finished replies it makes its consumer send (to inventory.flow_replies)

    def __repr__(self) -> str:  # a body may be 100 kB: show its start, and its length
        body = f"{self.body[:200]!r}{f'... ({len(self.body)} bytes)' if len(self.body) > 200 else ''}"
        headers = f"{self.headers!r:.200}"
        return f"Case({self.queue}, {self.kind}, {body}, valid={self.valid}, type={self.type!r:.60}, {headers})"


@st.composite
def cases(draw: st.DrawFn) -> Case:
    queue = draw(st.sampled_from(QUEUES))
    kind = message_type(queue)
    invalid_body = f"invalid {kind} body: "
    body = draw(valid_body(kind))
    fields = {name: json_text(value) for name, value in body.items()}
    how = draw(
        st.sampled_from(
            [
                *("valid", "not_json", "wrong_shape", "dropped", "extra", "hostile_value"),
                *("wrong_type", "no_id", "flow_header", "garbled_headers"),
            ]
        )
    )
    if how == "not_json":
        raw = draw(st.binary(max_size=300).filter(lambda raw: not is_json_object(raw)))
        return Case(queue, how, raw, valid=False, reason=invalid_body)
    if how == "wrong_shape":
        value = draw(any_json.filter(lambda value: not isinstance(value, dict)))
        return Case(queue, how, json_text(value).encode("utf-8", errors="backslashreplace"), False, invalid_body)
    if how == "dropped":
        name = draw(st.sampled_from(sorted(set(FIELDS[kind]) - OPTIONAL)))
        del fields[name]
        return Case(queue, f"{how}:{name}", encode(fields), False, f"{invalid_body}{name}: ")
    if how == "extra":  # a few fields, one with a 100,000-character name, or 2,000 of them
        names = st.text(min_size=1, max_size=8).filter(lambda name: name not in FIELDS[kind])
        extra = draw(
            st.lists(names, min_size=1, max_size=3, unique=True)
            | st.integers(10_000, 100_000).map(lambda n: ["K" * n])
            | st.just([f"k{n}" for n in range(2000)])
        )
        fields |= {name: json_text(None) for name in extra}
        return Case(queue, how, encode(fields), False, invalid_body)
    if how == "hostile_value":
        name = draw(st.sampled_from(sorted(FIELDS[kind])))
        fields[name] = draw(hostile_for(kind, name))
        return Case(queue, f"{how}:{name}", encode(fields), False, invalid_body)
    if how == "wrong_type":
        wrong = draw(st.text(max_size=40).filter(lambda text: text != kind))
        return Case(queue, how, encode(fields), False, "unexpected message type", type=wrong)
    if how == "no_id":  # no correlation_id (a missing message_id aiormq fills in itself: not testable there)
        return Case(queue, how, encode(fields), False, "envelope lacks correlation_id", correlation_id="")
    commands = ("recalculate_sku", "update_sku_availability", "update_wishlists_for_sku")
    if how == "flow_header" and kind in commands:
        header = draw(header_values.filter(bool))
        if is_identifier(header):  # a flow id inventory does not know: the owner replies all the same
            return Case(queue, "valid:flow_id", encode(fields), True, headers={FLOW_ID: header}, replies=1)
        return Case(queue, how, encode(fields), False, "rejected: the flow_id header", headers={FLOW_ID: header})
    if how == "garbled_headers":
        headers = draw(
            st.sampled_from(
                [
                    {"skuflow-retries": "many"},
                    {"skuflow-retries": -3},
                    {"skuflow-retries": 2**40},
                    {"x-death": "nonsense"},
                    {"x-death": [{"count": "x", "reason": "expired", "queue": f"{queue}.retry.200ms"}]},
                    {"x-death": [{"count": 2**40, "reason": b"\xff", "queue": 7}]},
                ]
            )
        )
        return Case(queue, how, encode(fields), True, headers=headers)
    return Case(queue, "valid", encode(fields), True)


# -- The property --------------------------------------------------------------------------------------------

figures: Counter[tuple[str, str, str]] = Counter()  # (queue, kind, outcome) -> messages, over the session
_numbers = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def write_figures() -> Iterator[None]:
    yield
    if FIGURES:
        rows = [{"queue": q, "kind": k, "outcome": o, "messages": n} for (q, k, o), n in sorted(figures.items())]
        with open(FIGURES, "w") as out:
            json.dump(rows, out, indent=1)


async def publish(system: System, number: int, position: int, case: Case) -> None:
    headers = {**case.headers, CASE: f"{number}.{position}"}
    envelope = raw_envelope(
        case.type if case.type is not None else message_type(case.queue),
        case.body,
        headers=headers,
        correlation_id=case.correlation_id,
    )
    await publish_raw(system.observer, case.queue, envelope)


# What one stock report of a new SKU makes each queue's consumer handle, in each style.
ONE_REPORT = {
    "choreography": {queue: 1 for queue in QUEUES if queue.endswith(".sku_processed")},
    "orchestration": {
        "inventory.recalculate_sku": 1,
        "catalog.update_sku_availability": 1,
        "users.update_wishlists_for_sku": 1,
        FLOW_REPLIES: 3,
    },
}


@pytest.fixture(autouse=True)
def no_resent_steps(stack: Stack) -> None:
    """A step resent after its timeout would be one message more than a burst's counts expect."""
    stack.overrides |= {"flow_step_timeout_seconds": 600}


async def report_and_follow(system: System, sku: str, mode: str) -> None:
    """A normal stock report; wait until catalog and users both know of it, and until every consumer of the
    messages it caused is done with them (so that the next burst's counts start clean)."""
    tally = Tally.now(system)
    body = {"warehouse_id": "WH-1", "items": [{"sku": sku, "on_hand": 3}]}
    status, answer, _ = await system.call("POST", "/v1/stock", token=await system.client_token(), json=body)
    assert status == 202, answer
    await wait_until(lambda: system.catalog_knows(sku, 1), what=f"catalog to learn of {sku} after the burst")
    users = system.users.app.state.runtime.db

    async def users_know() -> bool:
        async with users.reading() as session:
            return await session.scalar(select(sku_availability.c.revision).where(sku_availability.c.sku == sku)) == 1

    await wait_until(users_know, what=f"users to learn of {sku} after the burst")
    await tally.settled(ONE_REPORT[mode])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.timeout(max(120, 60 + EXAMPLES // 2))  # a long run takes about 0.2 s an example on RabbitMQ
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not LONG,
    database=None,
    # No shrinking: each try runs against live services and takes seconds, and a failure names its message.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
@given(burst=st.lists(cases(), min_size=1, max_size=24))
async def test_every_fuzzed_message_is_handled_or_dead_lettered_at_once_and_the_flow_goes_on(
    system: System, mode: str, burst: list[Case]
):
    number = next(_numbers)
    tally = Tally.now(system)
    for position, case in enumerate(burst):
        await publish(system, number, position, case)
    expected = Counter(case.queue for case in burst)
    expected[FLOW_REPLIES] += sum(case.replies for case in burst)
    counts = await tally.settled(expected)

    letters = {queue: await take_dead_letters(system.observer, queue) for queue in QUEUES}
    dead = {letter.headers.get(CASE): (queue, letter) for queue in QUEUES for letter in letters[queue]}
    for queue in QUEUES:
        assert counts[queue]["retried"] == 0, f"{queue} retried a message: {counts[queue]}"
        assert counts[queue]["acked"] + counts[queue]["dead_lettered"] == expected[queue], (queue, counts[queue])
    for position, case in enumerate(burst):
        name = f"{number}.{position}"
        if case.valid:
            assert name not in dead, f"a valid message was dead-lettered: {case}, {dead[name]}"
            figures[case.queue, case.kind, "acked"] += 1
            continue
        assert name in dead, f"an invalid message was not dead-lettered: {case}"
        queue, letter = dead[name]
        assert queue == case.queue
        assert letter.attempts == 1, letter
        assert letter.reason.startswith(case.reason), (case, letter.reason)
        assert len(letter.reason) <= 2000, f"an x-reason of {len(letter.reason)} characters"
        figures[case.queue, case.kind.split(":")[0], "dead_lettered"] += 1
    assert len(dead) == sum(not case.valid for case in burst), "a dead letter that is none of the burst's"

    await report_and_follow(system, f"{LIVE}{number}", mode)
