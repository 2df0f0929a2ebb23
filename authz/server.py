"""run_server(settings): the gRPC server with Authorization, health and reflection, plus the metrics endpoint.

Who may reach each port is in README's Security section: the gRPC port only the Envoy in front (a held-open call
costs no thread, but the port is unauthenticated), the metrics port only a scraper.

Used by `python -m authz serve` and by the tests (port 0). Health is NOT_SERVING until every pool's keys
are loaded, so Envoy's health checks keep traffic away from a replica that could only deny.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent import futures
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import grpc
import uvloop
from granian.constants import Interfaces, TaskImpl
from granian.server.common import HTTP1Settings
from granian.server.embed import Server as EmbeddedHttpServer
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from authz import service
from authz.authorizer import Authorizer
from authz.config import RevocationMode, Settings
from authz.denylist import Denylist, EntryRules
from authz.getuser import get_user_lookup
from authz.http import HttpAuthorization
from authz.jwks import Fetcher, JwksCache, JwksRefresher, fetch_jwks
from authz.metrics import SAMPLE_SECONDS, Metrics
from authz.metrics_endpoint import MetricsEndpoint
from authz.policy import Policy
from authz.revocation import Lookup, Revocation, RevocationChecker
from authz.routes import RoutesError, RouteTable, RouteTableFile
from authz.state import SharedState
from authz.tokens import TokenVerifier

if TYPE_CHECKING:
    from authz.workers import WorkerLink

log = logging.getLogger("authz.server")


@dataclass(frozen=True)
class RunningServer:
    port: int
    metrics_port: int
    refresher: JwksRefresher
    metrics: Metrics


def build_verifier(
    settings: Settings,
    *,
    fetcher: Fetcher = fetch_jwks,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    metrics: Metrics | None = None,
) -> tuple[TokenVerifier, list[JwksCache]]:
    """The verifier for the configured pools, and the per-pool key caches it reads from."""
    caches = {
        pool.pool_id: JwksCache(
            pool.jwks_urls,
            fetcher=fetcher,
            clock=monotonic,
            timeout=settings.jwks_timeout_seconds,
            max_bytes=settings.jwks_max_bytes,
            ttl=settings.jwks_ttl_seconds,
            cooldown=settings.jwks_cooldown_seconds,
            on_fetch=metrics.jwks_observer(pool.pool_id) if metrics else None,
        )
        for pool in settings.pools
    }
    # Every issuer a pool's tokens may carry (its formats, its replica Regions) reads the pool's one key cache.
    verifier = TokenVerifier(
        issuers={issuer: pool.pool_id for pool in settings.pools for issuer in pool.issuers},
        key_sources={issuer: caches[pool.pool_id] for pool in settings.pools for issuer in pool.issuers},
        client_ids=settings.client_ids,
        leeway_seconds=settings.leeway_seconds,
        max_token_bytes=settings.max_token_bytes,
        cache_size=settings.cache_size,
        claim_headers=tuple(claim for claim, _ in settings.claim_headers),
        clock=clock,
        on_cache=metrics.record_cache if metrics else None,
    )
    if metrics:
        metrics.watch_cache(verifier.cached)
    return verifier, list(caches.values())


def build_revocation(
    settings: Settings,
    *,
    lookup: Lookup | None = None,
    metrics: Metrics | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[Revocation, SharedState | None]:
    """The revocation rule: always built, since a route may ask for `revocation=check` whatever the default;
    Cognito is contacted only when a Check needs it. lookup replaces Cognito's GetUser in tests. With
    AUTHZ_STATE_URL, also the shared state (not started: run_server starts it) and the denylist it keeps."""
    state = None
    denylist = None
    if settings.state_url is not None:
        denylist = Denylist(
            settings.state_max_entries,
            clock=clock,
            on_overflow=metrics.record_denylist_overflow if metrics else None,
        )
        state = SharedState(
            settings.state_url,
            denylist,
            timeout=settings.state_timeout_seconds,
            clock=clock,
            on_connected=metrics.record_state_connected if metrics else None,
            on_malformed=metrics.record_state_malformed if metrics else None,
        )
        if metrics:
            metrics.watch_denylist(lambda: len(denylist) if denylist is not None else 0)
    # At most half the waiting threads ever wait on Cognito, one call per revocation worker (and one pooled
    # connection each); tokens beyond them queue (bounded) for a later Check's answer.
    workers = max(1, settings.grpc_workers // 2)
    checker = RevocationChecker(
        lookup
        or get_user_lookup(
            endpoint_url=settings.cognito_endpoint_url,
            timeout=settings.revocation_timeout_seconds,
            workers=workers,
            fips=settings.cognito_fips,
            ca_bundle=settings.cognito_ca_bundle,
        ),
        ttl=settings.revocation_ttl_seconds,
        timeout=settings.revocation_timeout_seconds,
        cache_size=settings.revocation_cache_size,
        leeway=settings.leeway_seconds,
        workers=workers,
        max_waiters=workers,
        clock=clock,
        on_lookup=metrics.record_revocation_lookup if metrics else None,
        on_deferred=metrics.record_revocation_deferred if metrics else None,
        shared=state,
        on_shared=metrics.record_revocation_shared if metrics else None,
    )
    if metrics:
        metrics.watch_revocation(checker.cached, checker.queued)
    revocation = Revocation(
        checker,
        by_default=settings.revocation is RevocationMode.COGNITO,
        clock=clock,
        shared=state,
        denylist=denylist,
        rules=EntryRules(leeway=settings.leeway_seconds, session_seconds=settings.session_lifetime_seconds),
        sign_out_timeout=settings.state_timeout_seconds,
    )
    return revocation, state


class AuthorizerParts(NamedTuple):
    """The decision of a Check as settings configure it, and the parts a server keeps running beside it."""

    authorizer: Authorizer
    key_caches: list[JwksCache]  # to keep loaded (JwksRefresher)
    revocation: Revocation  # to close at shutdown
    routes: RouteTableFile | None  # to keep reloading (None: no AUTHZ_ROUTES)
    state: SharedState | None  # to start, and close at shutdown (None: no AUTHZ_STATE_URL)


def build_routes(settings: Settings, *, metrics: Metrics | None = None) -> RouteTableFile | None:
    """The route table of AUTHZ_ROUTES, loaded now (RoutesError when the file is missing or invalid), or None."""
    if settings.routes_file is None:
        return None

    def on_reload(table: RouteTable | None, error: RoutesError | None) -> None:
        if metrics is None:
            return
        if table is not None:
            metrics.record_routes(table.sha256, len(table.rules), reloaded=True)
        else:
            metrics.record_routes_refused()

    routes = RouteTableFile(settings.routes_file, interval=settings.routes_reload_seconds, on_reload=on_reload)
    table = routes.table
    if metrics is not None:
        metrics.record_routes(table.sha256, len(table.rules), reloaded=False)
    log.info(
        "route table loaded",
        extra={"fields": {"file": table.source, "sha256": table.sha256[:12], "rules": len(table.rules)}},
    )
    return routes


def build_authorizer(
    settings: Settings,
    *,
    metrics: Metrics,
    fetcher: Fetcher = fetch_jwks,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    revocation_lookup: Lookup | None = None,
) -> AuthorizerParts:
    """The decision of a Check as settings configure it; RoutesError when AUTHZ_ROUTES cannot be used."""
    routes = build_routes(settings, metrics=metrics)
    verifier, caches = build_verifier(settings, fetcher=fetcher, clock=clock, monotonic=monotonic, metrics=metrics)
    revocation, state = build_revocation(settings, lookup=revocation_lookup, metrics=metrics, clock=clock)
    authorizer = Authorizer(
        verifier=verifier,
        policy=Policy(
            header_prefix=settings.header_prefix,
            claim_headers=tuple(header for _, header in settings.claim_headers),
            realm=settings.realm,
            on_unconfirmed=settings.revocation_on_error,
        ),
        metrics=metrics,
        max_token_bytes=settings.max_token_bytes,
        revocation=revocation,
        routes=routes,
    )
    return AuthorizerParts(authorizer, caches, revocation, routes, state)


# Calls one connection to the gRPC port may have open (its SETTINGS_MAX_CONCURRENT_STREAMS): what a connection
# holding calls open can pin (about 20 KB a call). Envoy opens more connections when it needs more streams, but a
# burst on a connection whose SETTINGS it has not yet read may overshoot the bound (the excess is refused), so the
# bound sits far above any Envoy worker's concurrent Checks.
MAX_STREAMS_PER_CONNECTION = 1000
# In-flight Checks on a connection being closed for its age get this long to finish (far above Envoy's timeout),
# or the age itself when that is shorter.
CONNECTION_AGE_GRACE_SECONDS = 10.0
# A connection must finish its HTTP/2 preface within this.
HANDSHAKE_SECONDS = 5.0
# The HTTP transport: connections waiting to be accepted, connections served at once, and how long a request head
# may take to arrive.
HTTP_BACKLOG = 1024
HTTP_MAX_CONNECTIONS = 4096
HTTP_HEAD_SECONDS = 5.0


def grpc_options(connection_age_seconds: float, *, reuse_port: bool = False) -> list[tuple[str, int]]:
    """The gRPC server's channel options (connection_age_seconds: AUTHZ_GRPC_CONNECTION_AGE_SECONDS; reuse_port:
    a worker sharing the port with the others of its supervisor, which made sure nobody else holds it)."""
    age = connection_age_seconds
    return [
        # Alone, refuse to share a port: a second server silently splitting traffic would be a nasty surprise.
        ("grpc.so_reuseport", int(reuse_port)),
        ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
        ("grpc.max_connection_age_ms", int(age * 1000)),
        ("grpc.max_connection_age_grace_ms", int(min(CONNECTION_AGE_GRACE_SECONDS, age) * 1000)),
        ("grpc.server_handshake_timeout_ms", int(HANDSHAKE_SECONDS * 1000)),
    ]


def refuse_shared_port(host: str, port: int) -> None:
    """OSError when some socket already listens on host:port. A server binding with SO_REUSEPORT (granian always;
    workers) would join it and split its traffic without a word, so this is checked first, binding without it."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as probe:
        # A connection of an earlier server in TIME_WAIT is no listener.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def addr_port(addr: str) -> tuple[str, int]:
    """HOST:PORT (HOST may be [v6]) as host and port."""
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class Transport(enum.StrEnum):
    """How Envoy asks: its gRPC ext_authz (service.py) or its HTTP ext_authz (http.py)."""

    GRPC = "grpc"
    HTTP = "http"


class _Serving:
    """The servers on the event loop: the authorization port (gRPC with health and reflection, or HTTP) and the
    metrics endpoint (with /healthz)."""

    def __init__(
        self,
        settings: Settings,
        authorizer: Authorizer,
        metrics: Metrics,
        waiting: futures.Executor,
        transport: Transport,
        *,
        worker: bool = False,
    ) -> None:
        self._settings = settings
        self._worker = worker
        self._authorizer = authorizer
        self._waiting = waiting
        self._transport = transport
        self.serving = False
        self.metrics = MetricsEndpoint(metrics.registry, healthy=lambda: self.serving)
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._http: EmbeddedHttpServer | None = None
        self._http_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen: the metrics endpoint (a worker has none: its supervisor's counts for all) and the authorization
        port (a worker's later, by `listen` once it has keys), health NOT_SERVING until `serve`; OSError when a
        port cannot be had."""
        settings = self._settings
        if not self._worker:
            try:
                await self.metrics.start(*addr_port(settings.metrics_addr))
            except OSError as exc:
                raise OSError(f"cannot listen on {settings.metrics_addr}: {exc}") from None
            await self.listen()

    async def listen(self) -> None:
        """Listen on the authorization port (a worker shares it with the others: SO_REUSEPORT)."""
        if self._transport is Transport.HTTP:
            await self._start_http()
        else:
            await self._start_grpc()

    async def _start_grpc(self) -> None:
        settings = self._settings
        # grpc.aio objects belong to the loop they are made on: this one.
        server = self._server = grpc.aio.server(
            options=grpc_options(settings.grpc_connection_age_seconds, reuse_port=self._worker)
        )
        service.register(server, self._authorizer, self._waiting)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (service.SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        for name in ("", service.SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        try:
            self.port = server.add_insecure_port(settings.addr)
        except RuntimeError as exc:  # grpcio raises RuntimeError when the port is taken
            raise OSError(f"cannot listen on {settings.addr}: {exc}") from None
        if self.port == 0:
            raise OSError(f"cannot listen on {settings.addr}")
        await server.start()

    async def _start_http(self) -> None:
        addr = self._settings.http_addr
        host, port = addr_port(addr)
        if port == 0:
            raise OSError(f"cannot listen on {addr}: the HTTP transport needs a port, not 0")
        if not self._worker:
            # granian always binds with SO_REUSEPORT: a second server on the port would silently split traffic.
            refuse_shared_port(host, port)
        app = HttpAuthorization(self._authorizer, waiting=self._waiting)
        self._http, self._http_task = await start_http_server(app, host, port)
        self.port = port

    async def serve(self) -> None:
        """Health SERVING: every pool has keys (called after start)."""
        self.serving = True
        if self._health is not None:
            for name in ("", service.SERVICE_NAME):
                await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float) -> None:
        # Tell health checkers first, then let in-flight Checks finish within the grace period.
        self.serving = False
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)
        if self._http is not None and self._http_task is not None:
            self._http.stop()  # type: ignore[no-untyped-call]  # granian leaves it unannotated
            try:
                await asyncio.wait_for(self._http_task, timeout=grace + 5.0)
            except (TimeoutError, Exception):  # noqa: BLE001 - stopping must go on whatever granian says
                log.warning("the HTTP server did not stop cleanly")
        await self.metrics.close()


async def start_http_server(app: Any, host: str, port: int) -> tuple[EmbeddedHttpServer, asyncio.Task[None]]:
    """granian serving the RSGI `app` on host:port from the running loop, with the HTTP transport's bounds, once it
    accepts connections; OSError when it does not within 5 s."""
    server = EmbeddedHttpServer(
        app,
        address=host,
        port=port,
        interface=Interfaces.RSGI,
        runtime_threads=1,
        log_enabled=False,
        backlog=HTTP_BACKLOG,
        # granian admits this many connections at once (its default, the backlog, is 128): connections held open
        # without a whole request head must not use up the room of Envoy's, so the bound is far above them, and a
        # head must arrive within HTTP_HEAD_SECONDS.
        backpressure=HTTP_MAX_CONNECTIONS,
        http1_settings=HTTP1Settings(header_read_timeout=int(HTTP_HEAD_SECONDS * 1000)),
        # granian runs each request's coroutine itself instead of wrapping it in an asyncio Task (on Python 3.12+ it
        # falls back to Tasks by itself). granian calls this experimental; what it changes for us is measured and
        # tested: the handler (http.py) awaits nothing but the waiting threads' future, never asks for its Task
        # (no anyio, no asyncio.timeout), and the HTTP suites, through a real Envoy too, pass on it. With uvloop it
        # took the CPU per cached Check from 104-114 to 71-77 us (README, Performance).
        task_impl=TaskImpl.rust,
    )
    task = asyncio.get_running_loop().create_task(server.serve())
    # granian binds in its own time and says nothing when it cannot: listening is proven by a connection.
    deadline = time.monotonic() + 5.0
    while not await _accepts(host, port):
        if task.done() or time.monotonic() > deadline:
            server.stop()  # type: ignore[no-untyped-call]  # granian leaves it unannotated
            raise OSError(f"cannot listen on {host}:{port}")
        await asyncio.sleep(0.02)
    return server, task


async def _accepts(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    return True


@contextmanager
def event_loop_thread(transport: Transport | None = None) -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread of its own until exit: uvloop's for the HTTP transport (granian hands it
    every request from its own thread, and uvloop's wake-ups cost far less than asyncio's self-pipe), asyncio's
    otherwise (grpc.aio is made for it)."""
    loop = uvloop.new_event_loop() if transport is Transport.HTTP else asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="authz-loop", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10.0)
        if not thread.is_alive():
            loop.close()


@contextmanager
def run_server(
    settings: Settings,
    *,
    fetcher: Fetcher = fetch_jwks,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    revocation_lookup: Lookup | None = None,
    transport: Transport = Transport.GRPC,
    worker: WorkerLink | None = None,
) -> Iterator[RunningServer]:
    """Start serving on settings.addr (gRPC; port 0 picks a free port) or settings.http_addr (HTTP; a port of its
    own); stop gracefully on exit.

    Either server runs on an event loop in a thread of its own: the gRPC one is grpcio's asyncio server, so a call
    costs no thread until it has its request (service.py), the HTTP one granian embedded (http.py); the metrics
    endpoint runs on the same loop. clock is wall time for token claims and revocation answers, monotonic drives
    JWKS TTLs and cooldowns; tests may replace both, and revocation_lookup replaces Cognito's GetUser.

    worker: this process is one of AUTHZ_WORKERS under a supervisor (authz/workers.py), which serves metrics and
    health for all: it joins the port (SO_REUSEPORT) once it has keys, then tells the supervisor.
    """
    metrics = Metrics(multiprocess=worker is not None)
    authorizer, caches, revocation, routes, state = build_authorizer(
        settings,
        metrics=metrics,
        fetcher=fetcher,
        clock=clock,
        monotonic=monotonic,
        revocation_lookup=revocation_lookup,
    )
    # The threads that decide Checks which must wait on the network (a key refetch, Cognito's GetUser).
    waiting = futures.ThreadPoolExecutor(max_workers=settings.grpc_workers, thread_name_prefix="check")
    with ExitStack() as stack:
        stack.callback(revocation.close)
        stack.callback(waiting.shutdown, wait=False, cancel_futures=True)
        loop = stack.enter_context(event_loop_thread(transport))

        def on_loop(coroutine: Coroutine[Any, Any, None]) -> None:
            asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=60.0)

        serving = _Serving(settings, authorizer, metrics, waiting, transport, worker=worker is not None)
        try:
            on_loop(serving.start())
        except BaseException:
            on_loop(serving.stop(0))
            raise
        stack.callback(log.info, "authz stopped")
        stack.callback(on_loop, serving.stop(settings.shutdown_grace_seconds))
        if metrics.multiprocess:
            sampling = asyncio.run_coroutine_threadsafe(_sample_forever(metrics), loop)
            stack.callback(sampling.cancel)

        stopping = threading.Event()
        stack.callback(stopping.set)
        if state is not None:
            state.start()
            stack.callback(state.close)

        def on_ready() -> None:
            if state is not None and not state.connected:
                # A replica with an empty denylist would let in what the others refuse: it serves once its view
                # is in sync (after that, an outage keeps it serving from the view it has).
                log.info("signing keys loaded for every pool; waiting for the shared state before serving")
                threading.Thread(target=serve_once_synced, name="await-state", daemon=True).start()
                return
            serve()

        def serve_once_synced() -> None:
            while state is not None and not stopping.is_set():
                if state.wait_connected(0.5):
                    serve()
                    return

        def serve() -> None:
            log.info("signing keys loaded for every pool; serving")
            if worker is None:
                on_loop(serving.serve())
                return
            # A worker joins the shared port only now: a connection the kernel gives it is answered with keys.
            try:
                on_loop(serving.listen())
            except OSError as exc:
                worker.failed(str(exc))
                return
            on_loop(serving.serve())
            worker.ready()

        refresher = JwksRefresher(caches, on_ready=on_ready)
        refresher.start()
        stack.callback(refresher.stop)
        if routes is not None:
            routes.start()
            stack.callback(routes.stop)
        addr = settings.http_addr if transport is Transport.HTTP else settings.addr
        port = addr_port(addr)[1] if worker is not None else serving.port
        log.info(
            "authz listening" if worker is None else "authz worker started; joins the port once keys are loaded",
            extra={
                "fields": {
                    "transport": transport.value,
                    "addr": addr,
                    "port": port,
                    "metrics_port": serving.metrics.port,
                }
            },
        )
        yield RunningServer(
            port=port,
            metrics_port=serving.metrics.port,
            refresher=refresher,
            metrics=metrics,
        )


async def _sample_forever(metrics: Metrics) -> None:
    """A worker's gauges read in this process, written where the supervisor's scrape finds them."""
    while True:
        metrics.sample()
        await asyncio.sleep(SAMPLE_SECONDS)
