"""The operator's cost per ModelDeployment at each size: one Markdown table from the
summary.json of bench/operator.sh runs (given as their result directories)."""

import json
import sys
from pathlib import Path


def row(summary: dict) -> str:
    n = summary["n"]
    cold = summary["cold_start"]
    direct = summary.get("direct") or {}
    cpu = {c["process"]: c["cpu_seconds"] for c in cold["cpu_until_healthy"]}
    writes = sum(cold["writes"].values())
    status = cold["writes"].get("status/apply", 0)
    api = cold.get("api_until_healthy") or {}
    ratio = cold["healthy_seconds"] / direct["accepted_seconds"] if direct else float("nan")
    memory = summary["memory"]
    return (
        f"| {n} | {direct.get('accepted_seconds', float('nan')):.2f} s | {cold['healthy_seconds']:.2f} s "
        f"| {ratio:.2f}× | {writes / n:.2f} ({status / n:.2f}) | {api.get('requests', 0) / n:.1f} "
        f"| {cpu.get('modelship-operator', 0) * 1000 / n:.2f} ms | {cpu.get('kube-apiserver', 0) * 1000 / n:.1f} ms "
        f"| {memory['rss_at_healthy_mib']:.1f} MiB | {cold['reconciles'] / n:.1f} |"
    )


def main() -> None:
    summaries = [json.loads((Path(d) / "summary.json").read_text()) for d in sys.argv[1:]]
    summaries.sort(key=lambda s: s["n"])
    print(
        "| N | Direct: writes accepted | Cold start: all Healthy | Ratio "
        "| Operator writes per object (status) | API requests per object "
        "| Operator CPU per object | kube-apiserver CPU per object | RSS at Healthy "
        "| Reconciles per object |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for summary in summaries:
        print(row(summary))


if __name__ == "__main__":
    main()
