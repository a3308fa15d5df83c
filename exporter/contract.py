"""The alert thresholds of docs/metrics-contract.md: the page, the dashboards and (by test) the rules use these.

prometheus/rules/flakedrop-alerts.yml cannot import Python, so tests/test_prometheus_rules.py parses its
expressions and holds every number in them to the constants here; the same test reads the contract doc.
"""

from __future__ import annotations

from typing import Final

# FlakeDropFailureRatioHigh: the fleet's 1h failure ratio, with a volume guard.
FAILURE_RATIO_WARNING: Final = 0.10
FAILURE_RATIO_CRITICAL: Final = 0.25
MIN_DEPLOYMENTS: Final = 20  # deployments in the window before a failure ratio means anything

# FlakeDropReleaseRegression: one version fails at least FACTOR times as often as the rest of the fleet.
REGRESSION_FACTOR: Final = 2
REGRESSION_MIN_DEPLOYMENTS: Final = 10  # of the version, and of the rest of the fleet (the baseline)
REGRESSION_MIN_FAILURES: Final = 3  # of the version

# FlakeDropFailureSpike: the 5m failure ratio is above a floor and FACTOR times the 1d ratio.
SPIKE_MIN_RATIO: Final = 0.05
SPIKE_FACTOR: Final = 3
SPIKE_MIN_DEPLOYMENTS: Final = 10

# FlakeDropRejectsHigh: share of events rejected over 15m, with a volume guard.
REJECTS_RATIO: Final = 0.2
REJECTS_MIN: Final = 20

# FlakeDropBackupStale: the newest snapshot is older than FACTOR backup intervals.
BACKUP_STALE_FACTOR: Final = 2

# Drawn by the Releases board only (no alert): share of active users not on the latest release.
UPGRADE_LAG_WARNING: Final = 0.5
UPGRADE_LAG_CRITICAL: Final = 0.8


def failure_tone(failure_ratio: float | None, deployments: int) -> str:
    """Return the page's tone for a failure ratio: '' (too few deployments), 'good', 'warn' or 'bad'."""
    if failure_ratio is None or deployments < MIN_DEPLOYMENTS:
        return ""
    if failure_ratio > FAILURE_RATIO_CRITICAL:
        return "bad"
    return "warn" if failure_ratio > FAILURE_RATIO_WARNING else "good"
