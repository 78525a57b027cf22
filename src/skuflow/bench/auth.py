"""`skuflow bench auth`: what each way of verifying a token costs, each beside a baseline in the same run.

The system: `skuflow serve users` and `skuflow serve inventory`, each in a process of its own on scratch
stacks of RabbitMQ and PostgreSQL (as deployed), or with `embedded` `skuflow up` (one process, the in-process
broker and SQLite); users issues signed tokens in both (SKUFLOW_TOKEN_FORMAT=jwt), so the warehouse's token
is a JWT, and every subject below verifies that same token: `rest` and `grpc` have users check its signature
(and its revocation) for each call, `local` checks it here. The callers run in this process, each a closed
loop (the next call as soon as the last answered), for `seconds` after a warm-up, at 1 and at 50 callers.
Measured, each pair back to back:

- `rest`: `POST /v1/auth/verify` on users, as inventory asks it (`RestAsk`), beside `rest baseline`: users'
  `GET /healthz`, an endpoint of the same server stack that answers a constant;
- `grpc`: `skuflow.auth.v1.Auth/Verify` over one channel (`GrpcAsk`), beside `grpc baseline`: the standard
  health `Check` on the same server and channel;
- `local`: the token's signature checked in this process against users' published key set (`LocalAsk`,
  started first, and measured once its first pull of the keys and revocations has succeeded): no call;
- `cache hit`: the verifier itself (`TokenVerifier.verify`) with the answer cached: no call at all;
- `protected` and `unprotected`: inventory's `GET /v1/flows?limit=1` (scope `stock:write`, its verifier's
  cache warm) and `GET /v1/skus?limit=1` (public): one empty page each, read the same way. Inventory has no
  endpoint that is both; these two are the nearest pair, so the ratio bounds what the check adds.

Each figure: calls per second, and each call's latency p50 / p99 (ms). The ratios: grpc / rest, local / rest
and each call against its baseline (calls/s), protected / unprotected (p50 latency).

Then, with the system stopped, the signing algorithms a JWT could use, in this process with PyJWT: RS256
(2048-bit RSA, what users signs with), ES256 (P-256) and EdDSA (Ed25519), each signing tokens of the claims
`signed_tokens.sign` makes and verifying one as `signed_tokens.verify` does, for ALGORITHM_SHARE of
`seconds` each: signs/s and verifies/s (medians of the runs), and RS256's rate over each one's.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Group, RenderableType
from rich.table import Table

from skuflow.auth import signed_tokens
from skuflow.bench.e2e.figures import BenchError
from skuflow.bench.e2e.stack import StackChoice, scratch_stack
from skuflow.bench.e2e.system import running, users_and_inventory
from skuflow.platform.auth import TokenVerifier
from skuflow.platform.http import ServiceUnavailable
from skuflow.platform.settings import Settings
from skuflow.platform.token_transports import GrpcAsk, LocalAsk, RestAsk
from skuflow.service_client import ServiceClient

CALLERS = (1, 50)
SYSTEM = {"token_format": "jwt"}  # the system's settings besides the bench's own: users signs its tokens
LOCAL_READY_SECONDS = 30.0  # for `LocalAsk`'s first pull of users' keys and revocations to succeed
SUBJECTS = ("rest", "rest baseline", "grpc", "grpc baseline", "local", "cache hit", "protected", "unprotected")
RATIOS = (  # (name, side, baseline, figure): calls/s ratios, and the latency ratio of the protected endpoint
    ("grpc / rest", "grpc", "rest", "calls_per_second"),
    ("local / rest", "local", "rest", "calls_per_second"),
    ("rest / its baseline", "rest", "rest baseline", "calls_per_second"),
    ("grpc / its baseline", "grpc", "grpc baseline", "calls_per_second"),
    ("protected / unprotected (p50)", "protected", "unprotected", "p50_ms"),
)

Call = Callable[[], Awaitable[object]]

# The signing algorithms measured: (JWS name, its key as shown); RS256 first, the one users signs with.
ALGORITHMS = (("RS256", f"RSA {signed_tokens.KEY_BITS}-bit"), ("ES256", "ECDSA P-256"), ("EdDSA", "Ed25519"))
ALGORITHM_SHARE = 0.2  # each algorithm signs, then verifies, for this share of `seconds` per run
MIN_ALGORITHM_SECONDS = 0.01
BATCH = 10  # calls between two looks at the clock


@dataclass(frozen=True)
class Figures:
    calls: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class AlgorithmFigures:
    signs: int
    sign_seconds: float
    verifies: int
    verify_seconds: float
    token_chars: int  # the length of one token, header and signature included

    @property
    def signs_per_second(self) -> float:
        return self.signs / self.sign_seconds if self.sign_seconds else 0.0

    @property
    def verifies_per_second(self) -> float:
        return self.verifies / self.verify_seconds if self.verify_seconds else 0.0


@dataclass
class AuthReport:
    seconds: float
    runs: int
    callers: tuple[int, ...]
    stack: str  # "postgresql": `skuflow serve` per service; "embedded": `skuflow up`
    # measured[callers][subject]: one Figures per run
    measured: dict[int, dict[str, list[Figures]]] = field(default_factory=dict)
    # algorithms[name]: one AlgorithmFigures per run
    algorithms: dict[str, list[AlgorithmFigures]] = field(default_factory=dict)

    def median(self, callers: int, subject: str, figure: str) -> float:
        return float(statistics.median(getattr(one, figure) for one in self.measured[callers][subject]))

    def ratio(self, callers: int, side: str, baseline: str, figure: str) -> float:
        """The median of the runs' ratios: each pair was measured back to back."""
        pairs = zip(self.measured[callers][side], self.measured[callers][baseline], strict=True)
        return float(statistics.median(getattr(a, figure) / getattr(b, figure) for a, b in pairs))

    def algorithm_median(self, algorithm: str, figure: str) -> float:
        return float(statistics.median(getattr(one, figure) for one in self.algorithms[algorithm]))

    def against_rs256(self, algorithm: str, figure: str) -> float:
        """RS256's rate over `algorithm`'s (above 1: RS256 is faster), the median of each run's pair."""
        pairs = zip(self.algorithms["RS256"], self.algorithms[algorithm], strict=True)
        return float(statistics.median(getattr(a, figure) / getattr(b, figure) for a, b in pairs))

    def as_dict(self) -> dict[str, object]:
        summary = {
            str(callers): {
                subject: {
                    "calls_per_second": self.median(callers, subject, "calls_per_second"),
                    "p50_ms": self.median(callers, subject, "p50_ms"),
                    "p99_ms": self.median(callers, subject, "p99_ms"),
                    "runs": [asdict(one) for one in self.measured[callers][subject]],
                }
                for subject in SUBJECTS
            }
            for callers in self.callers
        }
        ratios = {
            str(callers): {name: self.ratio(callers, side, base, figure) for name, side, base, figure in RATIOS}
            for callers in self.callers
        }
        return {
            "seconds": self.seconds,
            "runs": self.runs,
            "callers": list(self.callers),
            "stack": self.stack,
            "figures": summary,
            "ratios": ratios,
            "algorithms": {
                name: {
                    "key": key,
                    "signs_per_second": self.algorithm_median(name, "signs_per_second"),
                    "verifies_per_second": self.algorithm_median(name, "verifies_per_second"),
                    "rs256_over_it": {
                        "sign": self.against_rs256(name, "signs_per_second"),
                        "verify": self.against_rs256(name, "verifies_per_second"),
                    },
                    "token_chars": self.algorithms[name][0].token_chars,
                    "runs": [asdict(one) for one in self.algorithms[name]],
                }
                for name, key in ALGORITHMS
                if name in self.algorithms
            },
        }

    def table(self) -> RenderableType:
        """The calls' table, then (when measured) the signing algorithms'."""
        if not self.algorithms:
            return self.calls_table()
        return Group(self.calls_table(), self.algorithms_table())

    def calls_table(self) -> Table:
        table = Table(
            title=f"bench auth ({self.stack}): {self.runs} run(s) of {self.seconds:g} s a figure, closed-loop callers",
            caption="medians of the runs; ratios: the median of each run's pair",
        )
        table.add_column("subject")
        for callers in self.callers:
            table.add_column(f"{callers} caller(s): calls/s", justify="right")
            table.add_column("p50 / p99 ms", justify="right")
        for subject in SUBJECTS:
            cells = []
            for callers in self.callers:
                cells.append(f"{self.median(callers, subject, 'calls_per_second'):,.0f}")
                p50, p99 = self.median(callers, subject, "p50_ms"), self.median(callers, subject, "p99_ms")
                cells.append(f"{p50:.2f} / {p99:.2f}")
            table.add_row(subject, *cells)
        for name, side, base, figure in RATIOS:
            cells = []
            for callers in self.callers:
                cells += [f"{self.ratio(callers, side, base, figure):.2f}x", ""]
            table.add_row(name, *cells, style="bold")
        return table

    def algorithms_table(self) -> Table:
        table = Table(
            title=f"signing algorithms (PyJWT, this process): {self.runs} run(s), each figure for "
            f"{_algorithm_seconds(self.seconds):g} s",
            caption="medians of the runs; RS256 / it: the median of each run's ratio (above 1: RS256 is faster)",
        )
        for column in (
            "algorithm",
            "key",
            "signs/s",
            "verifies/s",
            "RS256 / it: sign",
            "RS256 / it: verify",
            "token chars",
        ):
            table.add_column(column, justify="left" if column in ("algorithm", "key") else "right")
        for name, key in ALGORITHMS:
            if name not in self.algorithms:
                continue
            table.add_row(
                name,
                key,
                f"{self.algorithm_median(name, 'signs_per_second'):,.0f}",
                f"{self.algorithm_median(name, 'verifies_per_second'):,.0f}",
                f"{self.against_rs256(name, 'signs_per_second'):.2f}x",
                f"{self.against_rs256(name, 'verifies_per_second'):.2f}x",
                str(self.algorithms[name][0].token_chars),
            )
        return table


async def measure(call: Call, callers: int, seconds: float, warmup: float) -> Figures:
    """`callers` closed loops of `call` for `warmup` then `seconds`; only the second span is counted."""
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    start = loop.time() + warmup
    end = start + seconds

    async def caller() -> None:
        while (now := loop.time()) < end:
            await call()
            if now >= start:
                latencies.append(loop.time() - now)

    await asyncio.gather(*(caller() for _ in range(callers)))
    if not latencies:
        return Figures(0, seconds, 0.0, 0.0)
    latencies.sort()
    return Figures(len(latencies), seconds, 1000 * _at(latencies, 0.50), 1000 * _at(latencies, 0.99))


def _at(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def run(
    seconds: float,
    warmup: float,
    runs: int,
    callers: tuple[int, ...],
    progress: Callable[[str], None],
    choice: StackChoice | None = None,
) -> AuthReport:
    """`choice`: the RabbitMQ and PostgreSQL to make scratch stacks on; None: embedded (`skuflow up`)."""
    report = AuthReport(seconds, runs, callers, "embedded" if choice is None else "postgresql")
    async with _system(choice) as calls:
        for number in range(1, runs + 1):
            for count in callers:
                into = report.measured.setdefault(count, {subject: [] for subject in SUBJECTS})
                for subject in SUBJECTS:
                    figures = await measure(calls[subject], count, seconds, warmup)
                    into[subject].append(figures)
                    progress(
                        f"run {number}/{runs}, {count} caller(s), {subject}: {figures.calls_per_second:,.0f} calls/s, "
                        f"p50 {figures.p50_ms:.2f} ms"
                    )
    for number in range(1, runs + 1):  # the system stopped: nothing else wants the CPU
        for name, _ in ALGORITHMS:
            measured = measure_algorithm(name, _algorithm_seconds(seconds))
            report.algorithms.setdefault(name, []).append(measured)
            progress(
                f"run {number}/{runs}, {name}: {measured.signs_per_second:,.0f} signs/s, "
                f"{measured.verifies_per_second:,.0f} verifies/s"
            )
    return report


def _algorithm_seconds(seconds: float) -> float:
    return max(MIN_ALGORITHM_SECONDS, seconds * ALGORITHM_SHARE)


def measure_algorithm(algorithm: str, seconds: float) -> AlgorithmFigures:
    """Sign tokens for `seconds`, then verify one for `seconds`, with a key of `algorithm` made here (not
    timed): the claims and header `signed_tokens.sign` makes, verified with `signed_tokens.verify`'s checks."""
    private, public = _key_pair(algorithm)
    kid = secrets.token_hex(8)
    sub = str(uuid.uuid4())

    def sign() -> str:
        now = int(time.time())
        claims = {
            "iss": signed_tokens.ISSUER,
            "aud": signed_tokens.AUDIENCE,
            "sub": sub,
            "scope": "stock:write",
            "iat": now,
            "exp": now + 3600,
            "jti": secrets.token_hex(16),
        }
        return jwt.encode(claims, private, algorithm=algorithm, headers={"kid": kid, "typ": signed_tokens.TYPE})

    token = sign()

    def verify() -> dict[str, Any]:
        header = jwt.get_unverified_header(token)  # as `signed_tokens.verify` reads the key id first
        if header.get("alg") != algorithm or header.get("kid") != kid:
            raise BenchError(f"{algorithm}: the token's header is not the one signed: {header}")
        return jwt.decode(
            token,
            public,
            algorithms=[algorithm],
            audience=signed_tokens.AUDIENCE,
            issuer=signed_tokens.ISSUER,
            options={"require": ["iss", "aud", "sub", "scope", "iat", "exp", "jti"], "verify_iat": False},
        )

    if verify()["sub"] != sub:
        raise BenchError(f"{algorithm}: a signed token did not verify to its own claims")
    signs, sign_seconds = _repeat(sign, seconds)
    verifies, verify_seconds = _repeat(verify, seconds)
    return AlgorithmFigures(signs, sign_seconds, verifies, verify_seconds, len(token))


def _key_pair(algorithm: str) -> tuple[Any, Any]:
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=signed_tokens.KEY_BITS)
    elif algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"no key for {algorithm!r}")
    return private, private.public_key()


def _repeat(call: Callable[[], object], seconds: float) -> tuple[int, float]:
    """`call` in batches of BATCH until `seconds` have passed (one batch at least): (calls, seconds taken)."""
    calls = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        for _ in range(BATCH):
            call()
        calls += BATCH
        if (now := time.perf_counter()) >= end:
            return calls, now - start


@contextlib.asynccontextmanager
async def _system(choice: StackChoice | None) -> AsyncIterator[dict[str, Call]]:
    """The system under test, in processes of its own, and each subject's call against it."""
    with tempfile.TemporaryDirectory(prefix="skuflow-bench-auth-") as folder:
        scratch = Path(folder)
        if choice is None:
            async with (
                scratch_stack(StackChoice("memory://")) as stack,
                running("choreography", scratch, stack, overrides=SYSTEM) as up,
                _calls(up.settings, up.client) as calls,
            ):
                yield calls
        else:
            async with (
                users_and_inventory(scratch, choice, overrides=SYSTEM) as served,
                _calls(served.settings, served.client) as calls,
            ):
                yield calls


@contextlib.asynccontextmanager
async def _calls(settings: Settings, client: ServiceClient) -> AsyncIterator[dict[str, Call]]:
    token = await client.token("warehouse")
    if not signed_tokens.looks_like_jwt(token):
        raise BenchError("users issued an opaque token, not a JWT: is SKUFLOW_TOKEN_FORMAT=jwt not applied?")
    http = client.http
    users, inventory = settings.users_url, settings.inventory_url
    over_rest = RestAsk(users, http)
    over_grpc = GrpcAsk(settings.users_grpc)
    over_local = LocalAsk(users, http, settings.auth_cache_seconds)
    channel = grpc.aio.insecure_channel(settings.users_grpc)
    health = health_pb2_grpc.HealthStub(channel)
    verifier = TokenVerifier(over_rest, cache_seconds=3600)
    bearer = {"Authorization": f"Bearer {token}"}

    async def get(url: str, headers: dict[str, str] | None = None) -> None:
        async with http.get(url, headers=headers) as response:
            if response.status != 200:
                raise BenchError(f"GET {url} answered {response.status}: {await response.text()}")
            await response.read()

    async def verified(ask: Callable[[str], Awaitable[object]]) -> None:
        if await ask(token) is None:
            raise BenchError("the warehouse's token was answered invalid")

    try:
        await verified(verifier.verify)  # and now it is cached
        await over_local.start()
        await _first_pull(over_local, token)
        yield {
            "rest": lambda: verified(over_rest),
            "rest baseline": lambda: get(f"{users}/healthz"),
            "grpc": lambda: verified(over_grpc),
            "grpc baseline": lambda: health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5),
            "local": lambda: verified(over_local),
            "cache hit": lambda: verified(verifier.verify),
            "protected": lambda: get(f"{inventory}/v1/flows?limit=1", bearer),
            "unprotected": lambda: get(f"{inventory}/v1/skus?limit=1"),
        }
    finally:
        await over_local.close()
        await over_grpc.close()
        await channel.close()


async def _first_pull(ask: LocalAsk, token: str) -> None:
    """Until `ask` has pulled users' keys and revocations once (it refuses every token before), at most
    LOCAL_READY_SECONDS; then the token must verify."""
    deadline = time.monotonic() + LOCAL_READY_SECONDS
    while True:
        try:
            principal = await ask(token)
        except ServiceUnavailable as error:
            if time.monotonic() > deadline:
                raise BenchError(
                    f"the local verifier was not ready within {LOCAL_READY_SECONDS:g} s: {error}"
                ) from None
            await asyncio.sleep(0.05)
            continue
        if principal is None:
            raise BenchError("the warehouse's token was answered invalid by the local verifier")
        return
