"""Shrink the Prometheus rule files' time scales for end-to-end tests.

The shipped rules (prometheus/rules/*.yml) are written so that a purely
textual transform gives a fast copy that differs only in ``for:`` /
``keep_firing_for:`` durations and range-vector windows:

* every range window is a literal ``[<n><unit>]`` (``[5m]``, ``[15m]``,
  ``[1h]``, ``[3h]``, ``[1d]``), never a subquery or a computed duration;
* volume guards count with ``increase()`` over the same window, so "at least
  20 deployments in the window" still means 20 deployments in the short window;
* no constant depends on a window length (no ``* 3600``).

Usage::

    from rules_transform import fast_rules
    fast = fast_rules(Path("prometheus/rules/flakedrop-alerts.yml").read_text())

With the defaults an end-to-end Prometheus should scrape and evaluate rules
every 1-5s, so that every short window holds at least two samples.
Annotations are not rewritten: their texts still say "last hour" etc.
"""

from __future__ import annotations

import re

# Window in the shipped rules -> window in the fast copy. Order is preserved
# (5m < 15m < 1h < 3h < 1d -> 30s < 1m < 2m < 3m < 5m), so "5m ratio vs 1d
# baseline" stays "short vs long".
DEFAULT_WINDOWS: dict[str, str] = {
    "5m": "30s",
    "15m": "1m",
    "1h": "2m",
    "3h": "3m",
    "1d": "5m",
}

_WINDOW = re.compile(r"\[(\d+[smhdwy])\]")
_SUBQUERY = re.compile(r"\[\s*\d+[smhdwy]\s*:")
_FOR = re.compile(r"^(\s*(?:for|keep_firing_for):\s*)(\S+)(\s*(?:#.*)?)$", re.MULTILINE)


def fast_rules(
    text: str,
    *,
    for_duration: str = "5s",
    keep_firing_for: str | None = None,
    windows: dict[str, str] | None = None,
) -> str:
    """Return ``text`` (a rule file) with short ``for:`` and windows.

    ``for:`` becomes ``for_duration`` (default ``5s``); ``keep_firing_for:``
    becomes ``keep_firing_for`` (default: same as ``for_duration``). Each
    ``[window]`` is mapped through ``windows`` (default ``DEFAULT_WINDOWS``).
    A window without a mapping, or a subquery, raises ``ValueError`` so that a
    new long window cannot slip silently into the fast copy.
    """
    mapping = DEFAULT_WINDOWS if windows is None else windows
    keep = for_duration if keep_firing_for is None else keep_firing_for

    if _SUBQUERY.search(text):
        raise ValueError("subqueries are not supported by fast_rules(); use plain [window] ranges")

    def window(match: re.Match[str]) -> str:
        original = match.group(1)
        if original not in mapping:
            raise ValueError(f"no fast replacement for window [{original}]; add it to the mapping")
        return f"[{mapping[original]}]"

    def duration(match: re.Match[str]) -> str:
        key = match.group(1).strip().rstrip(":").strip()
        value = keep if key == "keep_firing_for" else for_duration
        return f"{match.group(1)}{value}{match.group(3)}"

    return _FOR.sub(duration, _WINDOW.sub(window, text))
