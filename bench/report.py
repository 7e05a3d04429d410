"""The benchmark's outputs: the machine it ran on, one table of medians and ratios, a PNG chart."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

from .cases import Row


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        match = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
        cpu = match.group(1).strip() if match else ""
    except OSError:
        pass
    memory_gib = 0.0
    try:
        match = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
        memory_gib = int(match.group(1)) / 1024 / 1024 if match else 0.0
    except OSError:
        pass
    try:
        ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    except OSError:
        ssh = "not installed"
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "openssh": ssh,
    }


def describe_machine(info: dict[str, Any]) -> str:
    return f"{info['cores']} cores ({info['cpu']}), {info['memory_gib']} GiB, {info['os']}, Python {info['python']}, {info['openssh']}"


def _cell(row: Row, which: str) -> str:
    side = row.ours if which == "ours" else row.theirs
    text = f"{side.seconds:.2f} s"
    if "bytes" in row.extra and "50 hosts vs" not in row.name:
        rate = row.extra["bytes"] / side.seconds / 1e6
        # Through AWS's plugin an upload goes at well under 1 MB/s: whole numbers would hide it.
        text += f" ({rate:.0f} MB/s)" if rate >= 10 else f" ({rate:.2f} MB/s)"
    if "hosts" in row.extra:
        text += f", {side.peak_mib:.0f} MiB"
    if "mib_per_host" in row.extra:
        text += f" ({row.extra['mib_per_host'][which]:.1f}/host)"
    return text


def print_table(rows: list[Row], info: dict[str, Any]) -> None:
    header = ["ROW", "SSMFAB", "BASELINE", "", "SPEED", "TARGET", "MET", "NOTE"]
    lines = [header]
    for row in rows:
        if row.skipped:
            state = "FAILED" if row.skipped.startswith("FAILED") else "skipped"
            note = row.skipped.removeprefix("FAILED: ")
            lines.append([row.name, state, "", "", "", row.target_text, "NO" if state == "FAILED" and row.target_text else "", note[:160]])
            continue
        met = {True: "yes", False: "NO", None: ""}[row.met]
        lines.append([row.name, _cell(row, "ours"), row.theirs.label, _cell(row, "theirs"), f"{row.ratio:.2f}x", row.target_text, met, ""])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print(f"machine: {describe_machine(info)}")
    for index, line in enumerate(lines):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))
    print("SPEED: baseline time / ssmfab time (above 1: ssmfab is faster); medians of alternating runs.")


def write_plot(rows: list[Row], path: Path, info: dict[str, Any]) -> Path | None:
    """A bar per row: ssmfab's speed relative to its baseline, with the target marked. None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    shown = [r for r in rows if not r.skipped]
    if not shown:
        return None
    figure, axes = plt.subplots(figsize=(10, 0.45 * len(shown) + 1.6))
    names = [r.name for r in shown]
    ratios = [r.ratio for r in shown]
    colours = ["tab:green" if r.met else "tab:red" if r.met is False else "tab:blue" for r in shown]
    axes.barh(names, ratios, color=colours)
    for index, row in enumerate(shown):
        if row.target_ratio:
            axes.plot([1 / row.target_ratio] * 2, [index - 0.4, index + 0.4], color="black", linewidth=2)
        axes.text(row.ratio, index, f" {row.ratio:.2f}x", va="center")
    axes.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    axes.invert_yaxis()
    axes.set_xlabel("baseline time / ssmfab time (black mark: target; dashed: parity)")
    machine_lines = textwrap.fill(describe_machine(info), width=100)
    axes.set_title(f"ssmfab vs OpenSSH / Fabric through SSM tunnels\n{machine_lines}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
