"""The short soak: the same harness as `make soak`, for seconds, so it cannot rot and a leak or a wrong decision
under a mix of thousands of distinct tokens shows up in CI."""

from __future__ import annotations

from pathlib import Path

from bench.soak import PLATEAU_SLACK_MB, soak


def test_short_soak_makes_no_wrong_decision_and_memory_stays_flat(tmp_path: Path):
    """Hot, cold (more distinct tokens than the cache holds) and mixed load through Envoy: every allow carries the
    token's own caller, every invalid or missing token is denied, no errors, and authz memory stops growing once
    its cache is full."""
    results = soak(seconds=6.0, distinct=800, cache_size=200, workers=4, run_dir=tmp_path)
    assert results["wrong_decisions"] == 0, results
    assert results["errors"] == 0, results
    assert results["cold_requests_exceed_cache"], results
    assert 0 < results["cache_entries"]["verified"] <= 200, results
    assert all(results[mix]["requests"] > 100 for mix in ("hot", "cold", "mixed")), results
    assert results["rss_growth_after_fill_mb"] <= PLATEAU_SLACK_MB, results
    assert results["ok"]
