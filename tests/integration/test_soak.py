"""The short soak: the same harness as `make soak`, for seconds, so it cannot rot and CI sees a wrong decision or
a leak under thousands of distinct tokens."""

from __future__ import annotations

from pathlib import Path

from bench.soak import PLATEAU_SLACK_MB, soak


def test_short_soak_makes_no_wrong_decision_and_memory_stays_flat(tmp_path: Path):
    """After filling the cache, hot, cold and mixed load of new distinct tokens through Envoy gets every decision
    right, with no errors, both verdict caches within their bounds and authz memory flat."""
    results = soak(seconds=6.0, distinct=800, cache_size=200, workers=4, run_dir=tmp_path)
    assert results["wrong_decisions"] == 0, results
    assert results["errors"] == 0, results
    assert results["cold_requests_exceed_cache"], results
    assert all(results[mix]["requests"] > 100 for mix in ("hot", "cold", "mixed")), results
    assert results["cache_entries"] == {"verified": 200.0, "rejected": 20.0}, results
    assert results["rss_growth_after_fill_mb"] <= PLATEAU_SLACK_MB, results
    assert results["ok"]
