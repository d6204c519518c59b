"""``python -m bench.markdown RESULTS.json``: the results as a Markdown table (for RESULTS.md/README)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _cell(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}" if abs(value) < 1 else f"{value:,.1f}"


def render(data: dict[str, Any]) -> str:
    """One row per figure: Touchpoint, bare Temporal, ratio, and the scenario's goal and verdict."""
    machine = data["machine"]
    lines = [
        f"Measured {data['started_at']} on {machine['nproc']} x {machine['cpu']} (Python {machine['python']}); "
        f"server: {data['server']}.",
        "",
        "| scenario | figure | Touchpoint | bare Temporal | ratio | goal |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for key, scenario in data["scenarios"].items():
        for index, figure in enumerate(scenario["figures"]):
            goal = ""
            if index == 0:
                verdict = {True: "**met**", False: "**missed**", None: ""}[scenario["met"]]
                goal = f"{scenario['goal']}: {verdict}"
            arrow = "higher" if figure["better"] == "higher" else "lower"
            lines.append(
                f"| {key if index == 0 else ''} | {figure['name']} ({figure['unit']}, {arrow} is better) | "
                f"{_cell(figure['touchpoint'])} | {_cell(figure['baseline'])} | {figure['ratio']:.2f}x | {goal} |"
            )
    lines.append("")
    for key, scenario in data["scenarios"].items():
        lines.append(f"- **{key}**: {scenario['title']}.")
        lines += [f"  - {note}" for note in scenario["notes"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(json.loads(Path(sys.argv[1]).read_text())), end="")
