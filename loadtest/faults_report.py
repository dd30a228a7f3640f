"""The fault suite's results as Markdown tables: `python -m loadtest.faults_report [FILE]`.

FILE is a results file of tests/faults/ (default build/faults/results.json; the
committed full run is loadtest/results/faults.json). Prints one summary table (a row
per scenario) and one table per scenario (a row per phase), as in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PHASES = ("baseline", "fault", "recovery", "after")
STATUSES = ("FOUND", "STALE", "DEFAULTED", "UNAVAILABLE")


def _n(x: Any) -> str:
    """A figure as text: '-' for none."""
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:g}"
    return str(x)


def _errors(errors: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "0"


def _statuses(statuses: Mapping[str, int]) -> str:
    total = sum(statuses.values())
    if not total:
        return "-"
    return " / ".join(f"{100 * statuses.get(s, 0) / total:.0f}" for s in STATUSES)


def summary(doc: Mapping[str, Any]) -> list[str]:
    """One row per scenario: the figures that answer 'did it hold, how fast did it recover'."""
    out = [
        "| scenario | fault s | wrong values | acked writes lost | reads in deadline (fault) "
        "| read p99 ms (baseline -> fault) | read errors | pushes acked / refused "
        "| recovery s (reads / pushes) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in doc["scenarios"].items():
        reads, pushes = s["reads"], s["pushes"]
        out.append(
            f"| {name} | {_n(s['fault_s'])} | {s['wrong_values']} "
            f"| {pushes['acknowledged_lost_or_half']} "
            f"| {_n(reads['fault']['answered_within_deadline_pct'])}% "
            f"| {_n(reads['baseline']['p99_ms'])} -> {_n(reads['fault']['p99_ms'])} "
            f"| {_errors(reads['all']['errors'])} "
            f"| {pushes['acknowledged']} / {pushes['refused_with_json']} "
            f"| {_n(s['recovery_s'])} / {_n(s.get('push_recovery_s'))} |"
        )
    return out


def scenario(name: str, s: Mapping[str, Any]) -> list[str]:
    """The phases of one scenario, reads then pushes, and what else it recorded."""
    out = [
        f"### {name}",
        "",
        "| phase | reads | in deadline | p50 ms | p99 ms | max ms | errors | refused "
        "| FOUND / STALE / DEFAULTED / UNAVAILABLE % | pushes ok | push errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    pushes = s["pushes"]
    for phase in PHASES:
        r = s["reads"][phase]
        p = pushes.get(phase, {}) if phase == "fault" else {}
        out.append(
            f"| {phase} | {r['requests']} | {_n(r['answered_within_deadline_pct'])}% "
            f"| {_n(r['p50_ms'])} | {_n(r['p99_ms'])} | {_n(r['max_ms'])} | {_errors(r['errors'])} "
            f"| {r['refused']} | {_statuses(r['statuses'])} "
            f"| {_n(p.get('ok'))} | {_errors(p['errors']) if p else '-'} |"
        )
    out += [
        "",
        f"Wrong values {s['wrong_values']}; pushes attempted {pushes['attempted']}, "
        f"acknowledged {pushes['acknowledged']}, refused {pushes['refused_with_json']} "
        f"(of which written anyway {pushes.get('refused_but_written', '-')}), "
        f"errors {_errors(pushes['errors'])}, acknowledged lost or half "
        f"{pushes['acknowledged_lost_or_half']}; recovery {_n(s['recovery_s'])} s (reads), "
        f"{_n(s.get('push_recovery_s'))} s (pushes).",
    ]
    known = {"form", "git", "utc", "fault_s", "recovery_s", "push_recovery_s", "reads", "pushes",
             "wrong_values", "error_examples", "server_log"}  # fmt: skip
    extra = {k: v for k, v in s.items() if k not in known}
    if extra:
        out += ["", "Also: `" + json.dumps(extra, sort_keys=True) + "`"]
    counts = s.get("server_log", {}).get("counts", {})
    serious = {k: v for k, v in counts.items() if not k.startswith("warning")}
    if serious:
        out += ["", "Server log errors: " + "; ".join(f"{k} ({v})" for k, v in serious.items())]
    return out


def report(doc: Mapping[str, Any]) -> str:
    lines = [
        f"Run: git {doc['git']}, form {doc['form']}, {doc['written_utc']}, "
        f"read deadline {doc['read_deadline_s']} s.",
        "",
        *summary(doc),
    ]
    for name, s in doc["scenarios"].items():
        lines += ["", *scenario(name, s)]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file", type=Path, nargs="?", default=Path("build/faults/results.json"))
    args = p.parse_args()
    print(report(json.loads(args.file.read_text())), end="")


if __name__ == "__main__":
    main()
