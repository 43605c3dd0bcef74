"""Side-by-side benchmark: tether vs terminado vs a bare PTY (the floor), one invocation.

    .venv/bin/python -m bench --runs 3 --heavy-runs 1 --out bench/results/latest.json \\
        --plot docs/benchmarks.png

Each workload runs on a freshly started target, targets interleaved (their order rotates every
run), so that the ratios compare measurements taken side by side on the same noisy machine.
Figures are medians over the runs. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from bench.targets import TARGET_NAMES, make_target
from bench.workloads import HEAVY, LIGHT
from tether.tools.embedded import SHELL

# figure → (label, unit, better: "low"/"high")
FIGURES = {
    "new_session_ms": ("new session → first byte", "ms", "low"),
    "new_session_hot_ms": ("… attempts back to back (10 ms apart)", "ms", "low"),
    "reattach_ms": ("re-attach → hello + first replayed byte", "ms", "low"),
    "reattach_hot_ms": ("… attempts back to back (2 ms apart)", "ms", "low"),
    "echo_p50_ms": ("echo round trip p50", "ms", "low"),
    "echo_p99_ms": ("echo round trip p99", "ms", "low"),
    "echo_cpu_us": ("server CPU per echoed key", "µs", "low"),
    "throughput_mb_s": ("throughput (head -c 50M /dev/zero \\| base64)", "MB/s", "high"),
    "throughput_cpu_s": ("server CPU for that output", "s", "low"),
    "idle_kib_per_session": ("server memory per idle session", "KiB", "low"),
    "ring_bytes_per_session": ("… of which ring bytes used", "B", "low"),
    "stalled_growth_mib": ("server RSS growth, client stops reading", "MiB", "low"),
    "rss_1000_mib": ("server RSS with all sessions open (--sessions)", "MiB", "low"),
    "rss_growth_per_session_kib": ("RSS growth per session", "KiB", "low"),
    "idle_cpu_percent": ("server CPU, all sessions idle", "%", "low"),
    "open_all_s": ("time to open all sessions (50 at a time)", "s", "low"),
    "typers_echo_p50_ms": ("100 typers among them: echo p50", "ms", "low"),
    "typers_echo_p99_ms": ("100 typers among them: echo p99", "ms", "low"),
    "sessions_per_s": ("new sessions per second (sustained 10 s)", "1/s", "high"),
    "sessions_failed": ("… failed", "", "low"),
    "herd_all_resumed_s": ("herd: 1,000 cut at once → all resumed + typed", "s", "low"),
    "herd_exact": ("herd: clients with exact streams", "", "high"),
    "herd_storm_refusals": ("herd: storm refusals", "", "low"),
    "herd_reattach_p99_ms": ("herd: re-attach p99", "ms", "low"),
}


async def run_workload(
    name: str, workload: Any, target_name: str, sizes: dict[str, int], args: argparse.Namespace
) -> dict[str, Any]:
    pythons = dict(item.split("=", 1) for item in args.python)
    extra = {n: tuple(a.split()) for n, a in (item.split("=", 1) for item in args.serve_args)}
    target = make_target(
        target_name, shell=args.shell, pythons=pythons, extra_args=extra, client=args.client
    )
    await target.start()
    try:
        kwargs = {k: v for k, v in sizes.items() if k in workload.__code__.co_varnames}
        return dict(await workload(target, **kwargs))
    finally:
        await target.stop()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    targets = args.targets.split(",")
    sizes = {"sessions": args.sessions, "typers": args.typers, "clients": args.sessions}
    runs: dict[str, dict[str, list[float]]] = {t: {} for t in targets}
    plan = [(LIGHT, args.runs), (HEAVY, args.heavy_runs)]
    only = set(args.only.split(",")) if args.only else None
    for workloads, count in plan:
        for run in range(count):
            for name, workload in workloads.items():
                if only and name not in only:
                    continue
                order = targets[run % len(targets) :] + targets[: run % len(targets)]
                for target_name in order:
                    started = time.monotonic()
                    figures = await run_workload(name, workload, target_name, sizes, args)
                    seconds = time.monotonic() - started
                    numbers = {k: v for k, v in figures.items() if isinstance(v, int | float)}
                    shown = {k: round(v, 3) for k, v in numbers.items()}
                    notes = {k: v for k, v in figures.items() if k not in numbers and v}
                    print(f"run {run + 1} {name:20} {target_name:10} {seconds:6.1f} s {shown}")
                    if notes:  # what went wrong, when something did
                        print(f"      {notes}")
                    for key, value in numbers.items():
                        runs[target_name].setdefault(key, []).append(float(value))
    medians = {t: {k: statistics.median(v) for k, v in figs.items()} for t, figs in runs.items()}
    return {
        "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()},
        "args": vars(args),
        "runs": runs,
        "medians": medians,
    }


def table(result: dict[str, Any]) -> str:
    medians, targets = result["medians"], list(result["medians"])
    others = [t for t in targets if t != "tether"] if "tether" in targets else []
    header = "| workload | " + " | ".join(targets + [f"tether ÷ {o}" for o in others]) + " |"
    lines = [header, "|" + "---|" * (len(targets) + len(others) + 1)]
    for key, (label, unit, _) in FIGURES.items():
        values = {t: medians[t].get(key) for t in targets}
        if all(v is None for v in values.values()):
            continue
        cells = [_fmt(values[t]) for t in targets]
        ratios = [_ratio(values.get("tether"), values.get(other)) for other in others]
        lines.append(f"| {label} ({unit}) | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def _ratio(mine: float | None, other: float | None) -> str:
    if mine is None or other is None or other == 0:
        return "—"
    return f"{mine / other:.2f}×"


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["new_session_ms", "reattach_ms", "echo_p50_ms", "echo_p99_ms", "throughput_mb_s",
            "throughput_cpu_s", "idle_kib_per_session", "stalled_growth_mib", "typers_echo_p99_ms",
            "sessions_per_s", "rss_1000_mib", "herd_all_resumed_s"]  # fmt: skip
    medians, runs = result["medians"], result["runs"]
    keys = [k for k in keys if any(k in medians[t] for t in medians)]
    columns = 4
    rows = (len(keys) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(16, 3.6 * rows))
    for axis, key in zip(axes.flat, keys, strict=False):
        names = [t for t in medians if key in medians[t]]
        axis.bar(names, [medians[t][key] for t in names], color=["C0", "C1", "C2"][: len(names)])
        for index, name in enumerate(names):
            axis.plot([index] * len(runs[name][key]), runs[name][key], "k.", markersize=4)
        label, unit, better = FIGURES[key]
        axis.set_title(f"{label.replace(chr(92), '')}\n({unit}, {better}er is better)", fontsize=9)
    for axis in list(axes.flat)[len(keys) :]:
        axis.axis("off")
    figure.suptitle("tether vs terminado vs bare PTY — medians (bars) and runs (dots)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--targets",
        default="tether,terminado,pty",
        help=f"comma-separated: {', '.join(TARGET_NAMES)}, or a NAME below",
    )
    parser.add_argument(
        "--python",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a target NAME: tether run by another venv's python (bench/baseline.sh makes one)",
    )
    parser.add_argument(
        "--serve-args",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help="a target NAME: tether with these extra serve arguments (e.g. nosup=--no-supervise)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of the light workloads")
    parser.add_argument("--heavy-runs", type=int, default=1, help="runs of the heavy workloads")
    parser.add_argument("--sessions", type=int, default=1000, help="sessions / herd clients")
    parser.add_argument("--typers", type=int, default=100)
    parser.add_argument("--only", default="", help="comma-separated workload names")
    parser.add_argument("--out", default="bench/results/latest.json")
    parser.add_argument("--plot", default="")
    parser.add_argument(
        "--shell", default=SHELL, help=f"the shell every target starts (default: {SHELL})"
    )
    parser.add_argument(
        "--client",
        choices=("aiohttp", "light", "raw"),
        default="aiohttp",
        help="the client of the links: aiohttp's, the herd's light one (bench/herd.py), or "
        "frames written by hand on the socket",
    )
    args = parser.parse_args()
    result = asyncio.run(bench(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(table(result))
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
