"""The users service's bounds on work and memory (issue 14, defect 5): the rate-limit windows evict in
constant time, and the argon2 queue has a bounded number of places, with a share per network."""

from __future__ import annotations

import contextlib
import time

import pytest

from skuflow.users import passwords
from skuflow.users.rate_limits import SlidingWindow, TokenAttempts, network_of
from tests.support.clock import Clock

# -- The rate-limit windows --


def test_a_full_window_takes_a_new_key_in_constant_time():
    """A flood of new usernames once made each attempt scan every key (100,000: ~10 ms each)."""
    clock = Clock()
    window = SlidingWindow(5, 60, max_keys=100_000, clock=clock)
    for n in range(100_000):  # every key recent: nothing to sweep, so each new key must evict one
        window.record(f"username:{n}")

    started = time.perf_counter()
    for n in range(2_000):
        assert window.attempt(f"username:new-{n}") is None
    seconds = time.perf_counter() - started

    assert len(window._attempts) == 100_000
    assert seconds < 1.0, f"2,000 new keys in a full window took {seconds:.2f} s"


def test_a_full_window_forgets_the_key_least_recently_used():
    clock = Clock()
    window = SlidingWindow(5, 60, max_keys=3, clock=clock)
    for key in ("a", "b", "c"):
        window.attempt(key)
        clock.now += 1
    window.attempt("a")  # used again: now the most recent

    window.attempt("d")

    assert list(window._attempts) == ["c", "a", "d"], "b, the least recently used, went"


def test_idle_keys_are_swept_a_few_at_a_time_as_new_ones_come():
    clock = Clock()
    window = SlidingWindow(5, 60, max_keys=1000, clock=clock)
    for n in range(10):
        window.attempt(f"idle{n}")
    clock.now += 61

    for n in range(5):
        window.attempt(f"new{n}")

    assert len(window._attempts) == 5, "each new key swept two idle ones: all ten are gone"
    assert all(key.startswith("new") for key in window._attempts)


def test_a_key_still_limited_is_not_swept_as_idle():
    clock = Clock()
    window = SlidingWindow(1, 60, max_keys=1000, clock=clock)
    window.attempt("ada")
    clock.now += 30
    window.attempt("grace")

    assert window.attempt("ada") == 30


def test_the_trusted_addresses_stay_bounded_forgetting_the_least_recently_trusted():
    clock = Clock()
    attempts = TokenAttempts(2, 60, max_trusted=2, clock=clock)
    attempts.succeeded("client:warehouse", "10.0.0.1")
    attempts.succeeded("client:warehouse", "10.0.0.2")
    attempts.succeeded("client:warehouse", "10.0.0.1")  # trusted again: the most recent

    attempts.succeeded("client:warehouse", "10.0.0.3")

    assert list(attempts._trusted) == [("client:warehouse", "10.0.0.1"), ("client:warehouse", "10.0.0.3")]


def test_an_ipv6_address_counts_by_its_64_and_an_ipv4_one_by_itself():
    assert network_of("2001:db8:1:2::1") == network_of("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert network_of("10.0.0.1") == "10.0.0.1"
    assert network_of("unknown") == "unknown"


# -- The argon2 queue --


def test_the_hash_queue_refuses_at_once_beyond_its_capacity_and_frees_places_as_hashes_end():
    queue = passwords.HashQueue(capacity=3, share=3)
    with contextlib.ExitStack() as held:
        for network in ("a", "b", "c"):
            held.enter_context(queue.place(network))
        with pytest.raises(passwords.Busy, match=r"busy checking passwords \(3 waiting or running\)") as busy:
            held.enter_context(queue.place("d"))
        assert busy.value.retry_after >= 1
        assert queue.refused == 1
    with queue.place("d"):
        assert queue.held == 1


def test_one_network_holds_at_most_its_share_and_others_still_get_places():
    queue = passwords.HashQueue(capacity=10, share=2)
    with contextlib.ExitStack() as held:
        for _ in range(2):
            held.enter_context(queue.place("2001:db8::/64"))
        with pytest.raises(passwords.Busy, match="too many password checks at once from 2001:db8::/64"):
            held.enter_context(queue.place("2001:db8::/64"))
        with queue.place("10.0.0.1"):
            assert queue.held == 3
    assert queue.held == 0
    assert queue._held == {}, "networks that hold nothing are forgotten"


def test_a_place_is_given_back_when_the_work_fails():
    queue = passwords.HashQueue(capacity=1, share=1)
    with pytest.raises(RuntimeError), queue.place("a"):
        raise RuntimeError("the database went away")
    assert queue.held == 0


def test_the_queue_holds_eight_rounds_of_the_pool_and_a_network_one_round():
    assert passwords.queue.capacity == 8 * passwords.THREADS
    assert passwords.queue.share == passwords.THREADS
