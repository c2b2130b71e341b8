"""What test_browser and test_notebooks share about a notebook's run: the cell appended to read the notebook's own
`SMOKE` flag in its kernel, where test_browser leaves the notebook JupyterLab saved after its run, and the checks
of a run's outputs (test_notebooks applies them to that saved run, or to its own headless run)."""

from __future__ import annotations

import re
from pathlib import Path

SMOKE_CELL = "print('SMOKE =', SMOKE)"


def saved_run(notebook_outputs: Path, name: str) -> Path:
    """Where test_browser saves notebook `name` after running it in JupyterLab (in this session's outputs folder)."""
    return Path(notebook_outputs) / "browser-runs" / name


def output_problems(nb, name: str) -> list[str]:
    """What is wrong with a run notebook's outputs: an error; a widget with no static form (ipywidgets' bare
    "VBox(children=(...))" where a panel shows its first picture); a panel without its picture; the SMOKE cell not
    printing `SMOKE = True` (the notebook did not run in smoke mode)."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    problems = [f"{name}: cell error {o.get('ename')}: {o.get('evalue')}" for c in code for o in c.outputs
                if o.output_type == "error"]
    bare = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" for o in c.outputs
            if "application/vnd.jupyter.widget-view+json" in o.get("data", {}) and "image/png" not in o["data"]
            and re.match(r"[A-Z]\w*\(", o["data"].get("text/plain", ""))]
    if bare:
        problems.append(f"{name}: cells {bare} display a widget with no static form (use ldm_lite.widgets panels)")
    panels = [o for c in code for o in c.outputs if "interactive panel" in o.get("data", {}).get("text/plain", "")]
    if not all("image/png" in o["data"] for o in panels):
        problems.append(f"{name}: a panel's output has no picture (image/png)")
    if not code or code[-1].source != SMOKE_CELL:
        problems.append(f"{name}: the last cell is not the SMOKE cell")
    else:
        printed = "".join(o.get("text", "") for o in code[-1].outputs)
        if printed.strip() != "SMOKE = True":
            problems.append(f"{name} did not run in smoke mode (its kernel printed {printed!r})")
    return problems
