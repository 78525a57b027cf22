"""A property of the whole flow, in both coordination styles, checked on random histories (hypothesis).

Random stock reports for a few SKUs from a few warehouses, with extra (duplicate, late) deliveries of
`sku_processed` injected at random points. Once everything has drained: catalog's availability equals
inventory's for every SKU, and no user got an email the rules of CONTRACT section 7 do not allow, while
every user whose wishlisted item went from unavailable to available got at least one.

CI runs a few examples on each stack (deterministic: derandomized, so the same histories every run);
SKUFLOW_PROPERTY_EXAMPLES=200 runs it long. All examples share one running system; each uses SKU ids of its own.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from skuflow.catalog.db import products
from skuflow.users.db import notifications
from tests.services.conftest import MODES, System
from tests.support.waiting import wait_until

EXAMPLES = int(os.environ.get("SKUFLOW_PROPERTY_EXAMPLES", "6"))
_example_numbers = itertools.count()

Step = tuple[str, int, int, int]  # ("report" | "redeliver", sku index, warehouse, on_hand)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("report"), st.integers(0, 2), st.integers(1, 2), st.sampled_from([0, 0, 1, 3])),
        st.tuples(st.just("redeliver"), st.integers(0, 2), st.just(0), st.just(0)),
    ),
    min_size=1,
    max_size=12,
)


@dataclass
class History:
    """What inventory's revisions of one SKU were: (revision, available), from our own model of the rules."""

    levels: dict[int, int] = field(default_factory=dict)
    states: list[bool] = field(default_factory=list)  # states[r - 1] is the availability at revision r

    def report(self, warehouse: int, on_hand: int) -> None:
        before = sum(self.levels.values())
        self.levels[warehouse] = on_hand
        if not self.states or sum(self.levels.values()) != before:
            self.states.append(sum(self.levels.values()) > 0)

    def becomes_available(self) -> int:
        """How many times the SKU went from unavailable (or unknown) to available."""
        return sum(1 for previous, now in zip([False, *self.states], self.states, strict=False) if now and not previous)


@pytest.mark.parametrize("mode", MODES)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 10,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=steps)
async def test_catalog_converges_on_inventory_and_emails_follow_the_rules(system: System, history: list[Step]):
    example = next(_example_numbers)
    skus = [f"P{example}-{n}" for n in range(3)]
    warehouse_token = await system.client_token()
    user, user_token = await system.sign_up(f"user{example}@example.com")
    for sku in skus:
        status, _, _ = await system.call("PUT", f"/v1/users/{user}/wishlist/{sku}", token=user_token, service="users")
        assert status == 201

    model = {sku: History() for sku in skus}
    for kind, index, warehouse, on_hand in history:
        sku = skus[index]
        if kind == "report":
            body = {"warehouse_id": f"WH-{warehouse}", "items": [{"sku": sku, "on_hand": on_hand}]}
            status, answer, _ = await system.call("POST", "/v1/stock", token=warehouse_token, json=body)
            assert status == 202, answer
            model[sku].report(warehouse, on_hand)
        else:  # a duplicate or late delivery, as a broker may make
            await system.observer.publish(system.observer.envelope("sku_processed", {"sku": sku}), "sku_processed")

    reported = [sku for sku in skus if model[sku].states]
    await wait_until(lambda: _catalog_matches(system, model, reported), timeout=30, what="catalog to converge")
    await wait_until(lambda: _users_learned(system, model, reported), timeout=30, what="users to learn every revision")
    async with system.users.app.state.runtime.db.reading() as session:
        rows = (await session.execute(select(notifications).where(notifications.c.user_id == user))).all()
    for sku in skus:
        emailed = [row.revision for row in rows if row.sku == sku]
        states = model[sku].states
        assert len(emailed) == len(set(emailed)), "one email per transition"
        assert all(states[revision - 1] for revision in emailed), "an email only at a revision that was available"
        assert len(emailed) <= model[sku].becomes_available()
        if states and states[-1]:
            assert emailed, f"{sku} ended available: its user was emailed"


async def _catalog_matches(system: System, model: dict[str, History], skus: list[str]) -> bool:
    async with system.catalog.app.state.runtime.db.reading() as session:
        rows = {row.sku: row for row in await session.execute(select(products).where(products.c.sku.in_(skus)))}
    return all(
        sku in rows
        and rows[sku].availability_revision == len(model[sku].states)
        and rows[sku].available == model[sku].states[-1]
        for sku in skus
    )


async def _users_learned(system: System, model: dict[str, History], skus: list[str]) -> bool:
    from skuflow.users.db import sku_availability

    async with system.users.app.state.runtime.db.reading() as session:
        known = dict(
            (
                await session.execute(
                    select(sku_availability.c.sku, sku_availability.c.revision).where(sku_availability.c.sku.in_(skus))
                )
            ).all()
        )
    return all(known.get(sku) == len(model[sku].states) for sku in skus)
