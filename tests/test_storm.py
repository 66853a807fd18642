"""A cold-start storm against DSQL's connection rate, in the emulator with the DSQL proxy:
only 201s and documented 503s, every acknowledged write stored, the retries in the spans."""

from __future__ import annotations

from bench.storm import storm


def test_a_storm_of_cold_starts_meets_the_rate_limit_and_loses_nothing() -> None:
    # Half a connection a second: however slowly this machine starts 20 interpreters, most
    # of them meet the limit.
    figures = storm(20, rate=0.5, burst=1)
    # Nearly one cold start per POST: an environment that answered 503 early may take a
    # POST that reached the emulator late, on a loaded machine.
    assert figures["environments_created"] >= 10
    assert set(figures["statuses"]) <= {201, 503}, figures["statuses"]
    assert figures["retry_after"]
    assert figures["acknowledged"] > 0
    assert figures["lost"] == 0  # every write answered 201 is in the table
    # The limit really bit, and the spans show it: refused attempts, then connections made.
    assert figures["proxy"]["rate"] > 0
    assert figures["refused_attempts"] == figures["proxy"]["rate"]
    assert figures["retried_connects"] > 0
