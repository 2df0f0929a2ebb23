"""run_server(settings): the gRPC server with Authorization, health and reflection, plus the metrics endpoint.

Used by `python -m authz serve` and by the tests (port 0). Health is NOT_SERVING until every pool's keys
are loaded, so Envoy's health checks keep traffic away from a replica that could only deny.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, make_wsgi_app

from authz import service
from authz.authorizer import Authorizer
from authz.config import RevocationMode, Settings
from authz.jwks import Fetcher, JwksCache, JwksRefresher, fetch_jwks
from authz.metrics import Metrics
from authz.policy import Policy
from authz.revocation import Lookup, Revocation, RevocationChecker, cognito_lookup
from authz.tokens import TokenVerifier

log = logging.getLogger("authz.server")


@dataclass(frozen=True)
class RunningServer:
    server: grpc.Server
    port: int
    metrics_port: int
    health: health.HealthServicer
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
        pool.issuer: JwksCache(
            pool.jwks_url,
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
    verifier = TokenVerifier(
        issuers={pool.issuer: pool.pool_id for pool in settings.pools},
        key_sources=caches,
        client_ids=settings.client_ids,
        leeway_seconds=settings.leeway_seconds,
        max_token_bytes=settings.max_token_bytes,
        cache_size=settings.cache_size,
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
) -> Revocation:
    """The revocation rule: always built, since a route may ask for `revocation=check` whatever the default;
    Cognito is contacted only when a Check needs it. lookup replaces Cognito's GetUser in tests."""
    checker = RevocationChecker(
        lookup
        or cognito_lookup(
            endpoint_url=settings.cognito_endpoint_url,
            timeout=settings.revocation_timeout_seconds,
            # Ready before the first Check when every token is confirmed; built on demand for routes that ask.
            regions={pool.region for pool in settings.pools} if settings.revocation is RevocationMode.COGNITO else (),
        ),
        ttl=settings.revocation_ttl_seconds,
        timeout=settings.revocation_timeout_seconds,
        cache_size=settings.revocation_cache_size,
        leeway=settings.leeway_seconds,
        # At most half the gRPC workers ever wait on Cognito, one call per revocation worker, none queued.
        workers=max(1, settings.grpc_workers // 2),
        max_waiters=max(1, settings.grpc_workers // 2),
        clock=clock,
        on_lookup=metrics.record_revocation_lookup if metrics else None,
    )
    if metrics:
        metrics.watch_revocation(checker.cached)
    return Revocation(checker, by_default=settings.revocation is RevocationMode.COGNITO, clock=clock)


def build_authorizer(
    settings: Settings,
    *,
    metrics: Metrics,
    fetcher: Fetcher = fetch_jwks,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    revocation_lookup: Lookup | None = None,
) -> tuple[Authorizer, list[JwksCache], Revocation]:
    """The decision of a Check as settings configure it, with the key caches to keep loaded and the revocation
    rule to close at shutdown."""
    verifier, caches = build_verifier(settings, fetcher=fetcher, clock=clock, monotonic=monotonic, metrics=metrics)
    revocation = build_revocation(settings, lookup=revocation_lookup, metrics=metrics, clock=clock)
    authorizer = Authorizer(
        verifier=verifier,
        policy=Policy(
            header_prefix=settings.header_prefix, realm=settings.realm, on_unconfirmed=settings.revocation_on_error
        ),
        metrics=metrics,
        max_token_bytes=settings.max_token_bytes,
        revocation=revocation,
    )
    return authorizer, caches, revocation


class _MetricsHttpServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's signature
        pass


def _start_metrics_http(host: str, port: int, registry: CollectorRegistry) -> tuple[WSGIServer, threading.Thread]:
    """prometheus_client's start_http_server, except that the serving loop polls for shutdown every 50 ms.

    start_http_server's thread uses serve_forever's default 0.5 s poll, so every stop (SIGTERM, and each test's
    run_server teardown) waited up to half a second on an idle metrics endpoint.
    """
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    server_class = type("_MetricsHttpServer", (_MetricsHttpServer,), {"address_family": family})
    httpd: WSGIServer = make_server(
        str(sockaddr[0]), port, make_wsgi_app(registry), server_class, handler_class=_QuietHandler
    )
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="metrics-http", daemon=True
    )
    thread.start()
    return httpd, thread


@contextmanager
def run_server(
    settings: Settings,
    *,
    fetcher: Fetcher = fetch_jwks,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    revocation_lookup: Lookup | None = None,
) -> Iterator[RunningServer]:
    """Start serving on settings.addr (port 0 picks a free port); stop gracefully on exit.

    clock is wall time for token claims and revocation answers, monotonic drives JWKS TTLs and cooldowns;
    tests may replace both, and revocation_lookup replaces Cognito's GetUser.
    """
    metrics = Metrics()
    authorizer, caches, revocation = build_authorizer(
        settings,
        metrics=metrics,
        fetcher=fetcher,
        clock=clock,
        monotonic=monotonic,
        revocation_lookup=revocation_lookup,
    )
    health_servicer = health.HealthServicer()
    for name in ("", service.SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    def on_ready() -> None:
        log.info("signing keys loaded for every pool; serving")
        for name in ("", service.SERVICE_NAME):
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    refresher = JwksRefresher(caches, on_ready=on_ready)

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.grpc_workers, thread_name_prefix="check"),
        # Refuse to share a port: a second server silently splitting traffic would be a nasty surprise.
        options=[("grpc.so_reuseport", 0)],
    )
    service.register(server, authorizer)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((service.SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        port = server.add_insecure_port(settings.addr)
    except RuntimeError as exc:  # grpcio raises RuntimeError when the port is taken
        raise OSError(f"cannot listen on {settings.addr}: {exc}") from None
    if port == 0:
        raise OSError(f"cannot listen on {settings.addr}")

    metrics_host, _, metrics_port = settings.metrics_addr.rpartition(":")
    try:
        metrics_http, metrics_thread = _start_metrics_http(
            metrics_host.strip("[]"), int(metrics_port), metrics.registry
        )
    except OSError as exc:
        server.stop(None)
        raise OSError(f"cannot listen on {settings.metrics_addr}: {exc}") from None
    server.start()
    refresher.start()
    log.info(
        "authz listening",
        extra={"fields": {"addr": settings.addr, "port": port, "metrics_port": metrics_http.server_port}},
    )
    try:
        yield RunningServer(
            server=server,
            port=port,
            metrics_port=metrics_http.server_port,
            health=health_servicer,
            refresher=refresher,
            metrics=metrics,
        )
    finally:
        # Tell health checkers first, then let in-flight Checks finish within the grace period.
        health_servicer.enter_graceful_shutdown()
        server.stop(settings.shutdown_grace_seconds).wait()
        refresher.stop()
        revocation.close()
        metrics_http.shutdown()
        metrics_http.server_close()
        metrics_thread.join(timeout=5.0)
        log.info("authz stopped")
