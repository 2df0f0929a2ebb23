"""Prometheus collectors, on a registry of their own so several servers can live in one process (tests).

With AUTHZ_WORKERS above 1 every worker process writes its values to files in PROMETHEUS_MULTIPROC_DIR (set by the
supervisor before the worker starts: prometheus_client reads it at import) and the supervisor's scrape adds them
up (authz/workers.py): counters and histograms are summed over every worker that ever ran, so a restart never
makes them go back; each gauge says below how its workers' values combine. A gauge read at scrape time in one
process (a cache's size) is sampled every SAMPLE_SECONDS instead, since the scrape happens elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from authz.revocation import Deferral, SignOutOutcome, Status

# How stale a sampled gauge may be with several workers.
SAMPLE_SECONDS = 1.0
# Checks take tens of microseconds when cached and a few milliseconds at worst (a JWKS refetch aside).
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, multiprocess: bool = False) -> None:
        """multiprocess: this is one of several workers (PROMETHEUS_MULTIPROC_DIR is set); call `sample` every
        SAMPLE_SECONDS."""
        self.registry = registry if registry is not None else CollectorRegistry()
        self.multiprocess = multiprocess
        self._sampled: list[tuple[Gauge, Callable[[], float]]] = []
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
            "Tokens held by the verdict caches now (verified: at most AUTHZ_CACHE_SIZE; rejected: a tenth), summed "
            "over the workers (each has its own caches).",
            ["cache"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.jwks_fetches = Counter(
            "authz_jwks_fetches", "JWKS fetches by pool and outcome.", ["pool", "outcome"], registry=self.registry
        )
        self.keys_loaded = Gauge(
            "authz_jwks_keys_loaded",
            "Usable signing keys held per pool (with several workers, the fewest any worker holds).",
            ["pool"],
            registry=self.registry,
            multiprocess_mode="livemin",
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
            "authz_revocation_cache_entries",
            "Tokens whose Cognito answer is cached now, summed over the workers (each has its own cache).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.revocation_queue_entries = Gauge(
            "authz_revocation_queue_entries",
            "Tokens waiting for a revocation worker now, summed over the workers.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.revocation_shared = Counter(
            "authz_revocation_shared_answers",
            "GetUser answers taken from the shared state (another replica asked Cognito), by answer: active, revoked, "
            "or unknown (the replica asking had no answer in time).",
            ["outcome"],
            registry=self.registry,
        )
        self.state_connected = Gauge(
            "authz_state_connected",
            "1 while the shared state (AUTHZ_STATE_URL) answers and this replica's view of it is in sync, else 0 "
            "(with several workers, the lowest of any worker).",
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self.state_outages = Counter(
            "authz_state_outages",
            "Times the shared state stopped answering (Checks go on from the local view; lookups ask Cognito here).",
            registry=self.registry,
        )
        self.state_malformed = Counter(
            "authz_state_malformed",
            "Values read from the shared state that this server did not write, ignored: entry, answer or message.",
            ["what"],
            registry=self.registry,
        )
        self.denylist_entries = Gauge(
            "authz_denylist_entries",
            "Denylist entries held in the local view now (at most AUTHZ_STATE_MAX_ENTRIES; with several workers, the "
            "fewest any worker holds).",
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self.denylist_overflow = Counter(
            "authz_denylist_overflow",
            "Denylist entries the local view could not hold (it was full at AUTHZ_STATE_MAX_ENTRIES): each one is a "
            "revoke this replica does not enforce.",
            registry=self.registry,
        )
        self.sign_outs = Counter(
            "authz_sign_outs",
            "Checks on sign-out routes by outcome: recorded, unavailable (refused 503), not_configured.",
            ["outcome"],
            registry=self.registry,
        )
        self.routes_reloads = Counter(
            "authz_routes_reloads",
            "Route table files read after start: ok (now in force) or error (refused; the last good table stays).",
            ["result"],
            registry=self.registry,
        )
        self.routes_info = Gauge(
            "authz_routes_info",
            "The route table in force (1): its file's sha256 (first 12 hex digits) and its number of rules. With "
            "several workers, 1 for every table some worker has in force (two while they reload), 0 for tables "
            "no worker has any more.",
            ["sha256", "rules"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self._routes_labels: tuple[str, str] | None = None

    def record_routes(self, sha256: str, rules: int, *, reloaded: bool) -> None:
        """A route table is now in force (reloaded: replacing another, after start)."""
        labels = (sha256[:12], str(rules))
        if self._routes_labels is not None and self._routes_labels != labels:
            # A worker's values live in a file that forgets nothing: the old table is set to 0 there.
            if self.multiprocess:
                self.routes_info.labels(*self._routes_labels).set(0)
            else:
                self.routes_info.remove(*self._routes_labels)
        self._routes_labels = labels
        self.routes_info.labels(*labels).set(1)
        if reloaded:
            self.routes_reloads.labels("ok").inc()

    def record_routes_refused(self) -> None:
        self.routes_reloads.labels("error").inc()

    def watch_cache(self, cached: Callable[[], tuple[int, int]]) -> None:
        """Report the caches' sizes at scrape time (nothing on the Check path)."""
        self._watch(self.cache_entries.labels("verified"), lambda: cached()[0])
        self._watch(self.cache_entries.labels("rejected"), lambda: cached()[1])

    def watch_revocation(self, cached: Callable[[], int], queued: Callable[[], int] | None = None) -> None:
        """Report the revocation cache's and queue's sizes at scrape time."""
        self._watch(self.revocation_cache_entries, cached)
        if queued is not None:
            self._watch(self.revocation_queue_entries, queued)

    def _watch(self, gauge: Gauge, value: Callable[[], float]) -> None:
        if self.multiprocess:
            self._sampled.append((gauge, value))
        else:
            gauge.set_function(value)

    def sample(self) -> None:
        """Write the watched gauges' values now (multiprocess: the supervisor's scrape reads what was written)."""
        for gauge, value in self._sampled:
            gauge.set(value())

    def watch_denylist(self, entries: Callable[[], int]) -> None:
        self._watch(self.denylist_entries, entries)

    def record_state_connected(self, connected: bool) -> None:
        self.state_connected.set(1 if connected else 0)
        if not connected:
            self.state_outages.inc()

    def record_state_malformed(self, what: str) -> None:
        self.state_malformed.labels(what).inc()

    def record_denylist_overflow(self) -> None:
        self.denylist_overflow.inc()

    def record_sign_out(self, outcome: SignOutOutcome) -> None:
        self.sign_outs.labels(outcome.value).inc()

    def record_revocation_shared(self, status: Status) -> None:
        self.revocation_shared.labels(status.value).inc()

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
