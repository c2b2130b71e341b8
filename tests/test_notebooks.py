"""Every notebook in notebooks/ runs top to bottom in smoke mode, is committed without outputs, and defines no
library code (new notebooks are picked up automatically)."""

import ast
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
IDS = [p.name for p in NOTEBOOKS]


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebooks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_opens_with_a_goal_and_ends_with_exercises(path):
    nb = nbformat.read(path, as_version=4)
    first, last = nb.cells[0].source, nb.cells[-1].source
    assert nb.cells[0].cell_type == "markdown" and "By the end" in first and "Time" in first and "Paper" in first
    assert nb.cells[-1].cell_type == "markdown" and "Exercises" in last


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_defines_no_library_code(path):
    nb = nbformat.read(path, as_version=4)
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        src = "\n".join(line for line in c.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(src)):
            assert not isinstance(node, ast.ClassDef), f"{path.name} defines class {node.name}; move it to ldm_lite/"
            if isinstance(node, ast.FunctionDef) and len(node.body) > 3:
                raise AssertionError(f"{path.name} defines function {node.name}; move it to ldm_lite/ with a test")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_runs_top_to_bottom_in_smoke_mode(path, tmp_path, monkeypatch):
    monkeypatch.setenv("LDM_LITE_SMOKE", "1")
    monkeypatch.setenv("LDM_LITE_OUTPUTS", str(tmp_path / "outputs"))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert os.environ["LDM_LITE_SMOKE"] == "1"
