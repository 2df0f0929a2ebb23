"""Prometheus collectors, on a registry of their own so several servers can live in one process (tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from authz.revocation import Deferral, Status

# Checks take tens of microseconds when cached and a few milliseconds at worst (a JWKS refetch aside).
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.decisions = Counter(
            "authz_decisions",
            "Check decisions by result, reason, user pool and app client.",
            ["result", "reason", "pool", "client"],
            registry=self.registry,
        )
        self.check_seconds = Histogram(
            "authz_check_duration_seconds",
            "Time spent deciding one Check, inside the server.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        cache = Counter(
            "authz_token_cache", "Verified-token cache lookups by result.", ["result"], registry=self.registry
        )
        self.cache_hits = cache.labels("hit")
        self.cache_misses = cache.labels("miss")
        self.cache_entries = Gauge(
            "authz_token_cache_entries",
            "Tokens held by the verdict caches now (verified: at most AUTHZ_CACHE_SIZE; rejected: a tenth).",
            ["cache"],
            registry=self.registry,
        )
        self.jwks_fetches = Counter(
            "authz_jwks_fetches", "JWKS fetches by pool and outcome.", ["pool", "outcome"], registry=self.registry
        )
        self.keys_loaded = Gauge(
            "authz_jwks_keys_loaded", "Usable signing keys held per pool.", ["pool"], registry=self.registry
        )

        self.revocation_lookups = Counter(
            "authz_revocation_lookups",
            "Cognito GetUser calls confirming a token, by answer: active, revoked, or unknown (the call failed).",
            ["outcome"],
            registry=self.registry,
        )
        self.revocation_unconfirmed = Counter(
            "authz_revocation_unconfirmed",
            "Checks Cognito did not confirm in time, one per Check, by what AUTHZ_REVOCATION_ON_ERROR made of them: "
            'action="allow" counts every allow made on the JWT alone.',
            ["action"],
            registry=self.registry,
        )
        self.revocation_deferred = Counter(
            "authz_revocation_deferred",
            "Lookups that found every revocation worker busy: queued (made when a worker frees; once per token) or "
            "dropped (the queue was full: no call; once per Check, the token is offered again at its next Check).",
            ["result"],
            registry=self.registry,
        )
        self.revocation_cache_entries = Gauge(
            "authz_revocation_cache_entries", "Tokens whose Cognito answer is cached now.", registry=self.registry
        )
        self.revocation_queue_entries = Gauge(
            "authz_revocation_queue_entries", "Tokens waiting for a revocation worker now.", registry=self.registry
        )
        self.routes_reloads = Counter(
            "authz_routes_reloads",
            "Route table files read after start: ok (now in force) or error (refused; the last good table stays).",
            ["result"],
            registry=self.registry,
        )
        self.routes_info = Gauge(
            "authz_routes_info",
            "The route table in force (1): its file's sha256 (first 12 hex digits) and its number of rules.",
            ["sha256", "rules"],
            registry=self.registry,
        )

    def record_routes(self, sha256: str, rules: int, *, reloaded: bool) -> None:
        """A route table is now in force (reloaded: replacing another, after start)."""
        self.routes_info.clear()
        self.routes_info.labels(sha256[:12], str(rules)).set(1)
        if reloaded:
            self.routes_reloads.labels("ok").inc()

    def record_routes_refused(self) -> None:
        self.routes_reloads.labels("error").inc()

    def watch_cache(self, cached: Callable[[], tuple[int, int]]) -> None:
        """Report the caches' sizes at scrape time (nothing on the Check path)."""
        self.cache_entries.labels("verified").set_function(lambda: cached()[0])
        self.cache_entries.labels("rejected").set_function(lambda: cached()[1])

    def watch_revocation(self, cached: Callable[[], int], queued: Callable[[], int] | None = None) -> None:
        """Report the revocation cache's and queue's sizes at scrape time."""
        self.revocation_cache_entries.set_function(cached)
        if queued is not None:
            self.revocation_queue_entries.set_function(queued)

    def record_revocation_lookup(self, status: Status) -> None:
        self.revocation_lookups.labels(status.value).inc()

    def record_revocation_deferred(self, deferral: Deferral) -> None:
        self.revocation_deferred.labels(deferral.value).inc()

    def record_unconfirmed(self, denied: bool) -> None:
        self.revocation_unconfirmed.labels("deny" if denied else "allow").inc()

    def record_cache(self, hit: bool) -> None:
        (self.cache_hits if hit else self.cache_misses).inc()

    def jwks_observer(self, pool_id: str) -> Callable[[str, int], None]:
        """A JwksCache on_fetch callback bound to one pool."""

        def on_fetch(outcome: str, keys: int) -> None:
            self.jwks_fetches.labels(pool_id, outcome).inc()
            self.keys_loaded.labels(pool_id).set(keys)

        return on_fetch
