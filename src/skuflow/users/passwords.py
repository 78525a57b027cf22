"""Argon2 hashes of passwords and client secrets, computed off the event loop.

Hashing takes tens of milliseconds and 64 MiB by design (argon2-cffi's defaults), so it runs in worker
threads, never on the event loop. The threads are a pool of their own, of bounded size: a storm of logins
then waits its turn instead of taking one default-executor thread (and 64 MiB) per request.
"""

from __future__ import annotations

import asyncio
import functools
import os
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# argon2-cffi's defaults (RFC 9106's low-memory profile). The tests put a cheaper one here: the hashes
# record their own parameters, so what is stored verifies whichever hasher is current.
hasher = PasswordHasher()
_threads = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="argon2")


async def hash_secret(secret: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(_threads, hasher.hash, secret)


async def verify_secret(secret_hash: str | None, secret: str) -> bool:
    """Whether `secret` matches `secret_hash`. Without a hash (unknown user or client) a dummy one is
    checked all the same, so that the answer's timing does not tell whether the account exists."""
    return await asyncio.get_running_loop().run_in_executor(_threads, _verify, secret_hash, secret)


def _verify(secret_hash: str | None, secret: str) -> bool:
    try:
        return hasher.verify(secret_hash or _dummy_hash(), secret) and secret_hash is not None
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    return hasher.hash("no account has this secret")
