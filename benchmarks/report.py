"""results.json, the Markdown table and the plots of a benchmark run.

``results.json`` holds one run per device (``cpu``, ``cuda``): rerunning on another device adds its run and
keeps the others, so a GPU run done after copying the CPU ``results.json`` into the output folder adds
its column to the same table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks.timing import Row
from dreamgym.checkpoint import load_json, save_json
from dreamgym.data import atomic_write

RESULTS = "results.json"
TABLE = "results.md"


def load_runs(out: Path) -> dict[str, Any]:
    path = out / RESULTS
    return load_json(path)["runs"] if path.is_file() else {}


def save_run(out: Path, key: str, machine: dict[str, Any], settings: dict[str, Any], rows: list[Row],
             series: dict[str, dict[str, dict[int, float]]]) -> dict[str, Any]:  # fmt: skip
    """Adds (or replaces) the run ``key`` in ``out/results.json``; returns every run."""
    runs = load_runs(out)
    runs[key] = {
        "machine": machine,
        "settings": settings,
        "rows": [r.to_json() for r in rows],
        "series": {
            name: {kind: {str(n): v for n, v in by_n.items()} for kind, by_n in s.items()} for name, s in series.items()
        },  # fmt: skip
    }
    save_json(out / RESULTS, {"runs": runs})
    return runs


def _num(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _met(row: dict[str, Any]) -> str:
    return {True: "yes", False: "**no**", None: "—"}[row["met"]]


def machine_line(key: str, machine: dict[str, Any]) -> str:
    v = machine["versions"]
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ""
    flags = " ".join(machine.get("cpu_flags", []))
    return (f"**{key}**: {machine['cpu']} ({machine['cores']} cores; {flags}){gpu}; torch {v['torch']} with "
            f"{machine['torch_threads']} threads, numpy {v['numpy']}, gymnasium {v['gymnasium']}, vizdoom "
            f"{v.get('vizdoom')}, python {v['python']}; 1-min load {machine.get('load_average_1min')} at start; "
            f"{machine['date']}")  # fmt: skip


def markdown(runs: dict[str, Any]) -> str:
    """One table: benchmark, figure, baseline, target, then value / baseline / ratio / met per run."""
    keys = list(runs)
    lines = ["Every ratio is higher-is-better against a baseline measured in the same run (a rate over the "
             "baseline's rate, or the baseline's cost over the candidate's).", ""]  # fmt: skip
    lines += [f"- {machine_line(k, runs[k]['machine'])}" for k in keys]
    header = ["benchmark", "figure", "baseline", "target"]
    for k in keys:
        header += [f"value ({k})", f"baseline ({k})", f"ratio ({k})", f"met ({k})"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    order: list[tuple[str, str, str]] = []
    cells: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for k in keys:
        for row in runs[k]["rows"]:
            ident = (row["benchmark"], row["figure"], row["baseline"])
            if ident not in cells:
                order.append(ident)
                cells[ident] = {}
            cells[ident][k] = row
    for ident in order:
        any_row = next(iter(cells[ident].values()))
        target = f"≥ {any_row['target']:g}" if any_row["target"] is not None else "—"
        line = [*ident, target]
        for k in keys:
            row = cells[ident].get(k)
            if row is None:
                line += ["", "", "", ""]
            else:
                line += [f"{_num(row['value'])} {row['unit']}", _num(row["baseline_value"]), f"{row['ratio']:.3g}",
                         _met(row)]  # fmt: skip
        lines.append("| " + " | ".join(line) + " |")
    notes = {(r["benchmark"], r["figure"], r["baseline"]): r["note"] for k in keys for r in runs[k]["rows"]}
    lines += ["", "<details><summary>notes</summary>", ""]
    lines += [f"- {b} / {f} / {base}: {n}" for (b, f, base), n in notes.items() if n]
    lines += ["", "</details>", ""]
    lines += [f"![{name}]({name}_{k}.png)" for k in keys for name in runs[k]["series"]]
    return "\n".join(lines) + "\n"


def plot(out: Path, key: str, name: str, series: dict[str, dict[int, float]]) -> Path:
    """Steps/s against N (log-log) of the dream, its baselines and the real game (a horizontal line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"dream": "dream VectorEnv", "lstm": "bare LSTMCell + Linear loop", "unfused": "M.step loop (unfused)"}
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, label in labels.items():
        ns = sorted(series[kind])
        ax.plot(ns, [series[kind][n] for n in ns], marker="o", label=label)
    ax.axhline(series["real"][1], color="k", linestyle="--", label="real game (1 env)")
    ax.set(xscale="log", yscale="log", xlabel="envs N", ylabel="steps/s", title=f"{name} ({key})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path = out / f"{name}_{key}.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)
    return path


def write_table(out: Path, runs: dict[str, Any]) -> Path:
    path = out / TABLE
    text = markdown(runs)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path
