"""authz/metrics.py: what the collectors report, each server on a registry of its own."""

from __future__ import annotations

from authz.metrics import Metrics
from authz.revocation import Deferral, Status


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_each_metrics_has_its_own_registry():
    """Two servers in one process (the tests, the bench) count separately."""
    first, second = Metrics(), Metrics()
    first.decisions.labels("allow", "ok", "pool", "client").inc()
    assert sample(first, "authz_decisions_total", result="allow", reason="ok", pool="pool", client="client") == 1
    assert sample(second, "authz_decisions_total", result="allow", reason="ok", pool="pool", client="client") is None


def test_cache_sizes_are_read_at_scrape_time():
    """The verified and rejected cache gauges report what the caches hold when scraped, not when watched."""
    metrics = Metrics()
    sizes = [(0, 0)]
    metrics.watch_cache(lambda: sizes[-1])
    metrics.watch_revocation(lambda: 7)
    sizes.append((5, 2))
    assert sample(metrics, "authz_token_cache_entries", cache="verified") == 5
    assert sample(metrics, "authz_token_cache_entries", cache="rejected") == 2
    assert sample(metrics, "authz_revocation_cache_entries") == 7


def test_jwks_fetches_are_counted_by_pool_and_outcome_with_the_keys_held():
    """A pool's observer counts each fetch by outcome and sets how many keys the pool holds now."""
    metrics = Metrics()
    observe = metrics.jwks_observer("ca-central-1_AbC123")
    observe("ok", 2)
    observe("timeout", 2)
    observe("ok", 3)
    assert sample(metrics, "authz_jwks_fetches_total", pool="ca-central-1_AbC123", outcome="ok") == 2
    assert sample(metrics, "authz_jwks_fetches_total", pool="ca-central-1_AbC123", outcome="timeout") == 1
    assert sample(metrics, "authz_jwks_keys_loaded", pool="ca-central-1_AbC123") == 3


def test_revocation_lookups_and_unconfirmed_checks_are_counted_by_what_happened():
    """GetUser calls by Cognito's answer; Checks Cognito did not confirm by what the error policy did with them."""
    metrics = Metrics()
    for status in (Status.ACTIVE, Status.ACTIVE, Status.REVOKED, Status.UNKNOWN):
        metrics.record_revocation_lookup(status)
    metrics.record_unconfirmed(denied=True)
    metrics.record_cache(hit=True)
    metrics.record_cache(hit=False)
    metrics.record_cache(hit=True)
    assert [sample(metrics, "authz_revocation_lookups_total", outcome=o) for o in ("active", "revoked", "unknown")] == [
        2,
        1,
        1,
    ]
    assert sample(metrics, "authz_revocation_unconfirmed_total", action="deny") == 1
    assert sample(metrics, "authz_revocation_unconfirmed_total", action="allow") is None
    assert (
        sample(metrics, "authz_token_cache_total", result="hit"),
        sample(metrics, "authz_token_cache_total", result="miss"),
    ) == (2, 1)


def test_deferred_lookups_are_counted_and_the_queue_is_read_at_scrape_time():
    """Lookups that found every worker busy are counted by what became of them (queued or dropped); the queue gauge
    reports the checker's queue when scraped."""
    metrics = Metrics()
    queue = [0]
    metrics.watch_revocation(lambda: 7, lambda: queue[-1])
    for deferral in (Deferral.QUEUED, Deferral.QUEUED, Deferral.DROPPED):
        metrics.record_revocation_deferred(deferral)
    queue.append(3)
    assert sample(metrics, "authz_revocation_deferred_total", result="queued") == 2
    assert sample(metrics, "authz_revocation_deferred_total", result="dropped") == 1
    assert sample(metrics, "authz_revocation_queue_entries") == 3
    assert sample(metrics, "authz_revocation_cache_entries") == 7
