"""Print mutmut's results as a kill rate, and list the mutants that survived (for `make mutation`)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter


def main() -> int:
    """Summarize `mutmut results --all true`; exit 1 when no mutant was tested."""
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"], capture_output=True, text=True, check=False
    ).stdout
    states: Counter[str] = Counter()
    survivors = []
    for line in out.splitlines():
        name, _, state = line.strip().rpartition(": ")
        if not name:
            continue
        states[state] += 1
        if state == "survived":
            survivors.append(name)
    tested = states["killed"] + states["survived"] + states["timeout"]
    if not tested:
        print("mutation: no mutant was tested; see `mutmut run` output", file=sys.stderr)
        return 1
    killed = states["killed"] + states["timeout"]
    print(f"mutation: {killed}/{tested} mutants killed ({100 * killed / tested:.1f}%); states {dict(states)}")
    for name in survivors:
        print(f"  survived: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
