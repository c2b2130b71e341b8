"""Every notebook in notebooks/ runs top to bottom in smoke mode, is committed without outputs, defines no
library code, and agrees with its jupytext source NN_name.py (new notebooks are picked up automatically)."""

import ast
import re
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from notebook_runs import SMOKE_CELL, output_problems, saved_run  # noqa: E402

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
IDS = [p.name for p in NOTEBOOKS]
STEMS = sorted({p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")} | {p.stem for p in NOTEBOOK_DIR.glob("*.py")})


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebooks"


def _cells(nb) -> list[tuple[str, str, list]]:
    """(type, source, tags) of each cell: what a pair must agree on (ids, outputs and metadata may differ)."""
    return [(c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in nb.cells]


def pair_disagreement(ipynb: Path, py: Path) -> str | None:
    """None when the .ipynb and the jupytext source hold the same cells, else a message naming the first difference."""
    sync = f"run `python -m jupytext --sync notebooks/{py.name}` (or open the pair in JupyterLab and save) and commit both"
    if not py.exists():
        return f"{ipynb.name} has no source {py.name}; {sync.replace('--sync', '--set-formats ipynb,py:percent')}"
    if not ipynb.exists():
        return f"{py.name} has no notebook {ipynb.name}; run `python -m jupytext --to ipynb notebooks/{py.name}`"
    a, b = _cells(nbformat.read(ipynb, as_version=4)), _cells(jupytext.read(py))
    for i, (ca, cb) in enumerate(zip(a, b)):
        if ca != cb:
            return f"cell {i} differs: {ipynb.name} has {ca!r:.200}, {py.name} has {cb!r:.200}; {sync}"
    if len(a) != len(b):
        return f"{ipynb.name} has {len(a)} cells, {py.name} has {len(b)}; {sync}"
    return None


@pytest.mark.parametrize("stem", STEMS)
def test_notebook_and_its_source_agree(stem):
    problem = pair_disagreement(NOTEBOOK_DIR / f"{stem}.ipynb", NOTEBOOK_DIR / f"{stem}.py")
    assert problem is None, problem


def test_pair_check_catches_an_edit_a_missing_source_and_a_missing_notebook(tmp_path):
    ipynb, py = tmp_path / "x.ipynb", tmp_path / "x.py"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title"), nbformat.v4.new_code_cell("a = 1")])
    nb.cells[1].metadata["tags"] = ["parameters"]
    nbformat.write(nb, ipynb)
    assert "has no source x.py" in pair_disagreement(ipynb, py)
    jupytext.write(nb, py, fmt="py:percent")
    assert pair_disagreement(ipynb, py) is None
    good = py.read_text()
    py.write_text(good.replace("a = 1", "a = 2"))
    assert "cell 1 differs" in pair_disagreement(ipynb, py)
    py.write_text(good.replace('tags=["parameters"]', ""))
    assert "cell 1 differs" in pair_disagreement(ipynb, py)
    py.write_text(good + "\n# %%\nb = 3\n")
    assert "has 2 cells, x.py has 3" in pair_disagreement(ipynb, py)
    ipynb.unlink()
    assert "has no notebook x.ipynb" in pair_disagreement(ipynb, py)


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


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_runs_top_to_bottom_in_smoke_mode(path, notebook_outputs, monkeypatch):
    """No cell fails, every widget has a static form, smoke mode was on. The outputs checked are those of this
    session's run in JupyterLab (test_browser saves it) when there is one, else of a headless run here."""
    saved = saved_run(notebook_outputs, path.name)
    if saved.exists():
        nb = nbformat.read(saved, as_version=4)
    else:
        monkeypatch.setenv("LDM_LITE_SMOKE", "1")
        monkeypatch.setenv("LDM_LITE_OUTPUTS", str(notebook_outputs))  # shared with test_browser (conftest.py)
        nb = nbformat.read(path, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell(SMOKE_CELL))
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    problems = output_problems(nb, path.name)
    assert not problems, "\n".join(problems)


def test_output_checks_catch_an_error_a_bare_widget_and_a_run_outside_smoke_mode():
    widget = {"application/vnd.jupyter.widget-view+json": {"model_id": "x"}, "text/plain": "VBox(children=(...))"}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x"), nbformat.v4.new_code_cell(SMOKE_CELL)])
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="SMOKE = True\n")]
    assert output_problems(nb, "n") == []
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data=widget)]
    assert "no static form" in " ".join(output_problems(nb, "n"))
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data={**widget, "image/png": "iVBO"})]
    assert output_problems(nb, "n") == []
    nb.cells[0].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="boom", traceback=[])]
    assert "cell error ValueError: boom" in " ".join(output_problems(nb, "n"))
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data={"text/plain": "interactive panel: t"})]
    assert "no picture" in " ".join(output_problems(nb, "n"))
    nb.cells[0].outputs = []
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="SMOKE = False\n")]
    assert "did not run in smoke mode" in " ".join(output_problems(nb, "n"))
    nb.cells.pop()
    assert "not the SMOKE cell" in " ".join(output_problems(nb, "n"))


EXERCISE_LABEL = re.compile(r"^(?:- )?\*\*(\d+)\.(\d+)\b", re.MULTILINE)  # **3.4 · title** or - **3.6** text
REWRITTEN: set[str] = set()  # notebooks being rewritten (their exercises are numbered when they land)


def exercise_labels(nb) -> list[tuple[int, int]]:
    """(notebook, k) of every exercise label `**N.k` in the markdown cells, in order."""
    return [(int(a), int(b)) for c in nb.cells if c.cell_type == "markdown" for a, b in EXERCISE_LABEL.findall(c.source)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_exercises_are_numbered_once_by_notebook_and_order(path):
    """Every exercise, checked ("Your turn") or open (the closing list), is labelled N.k: N the notebook's number, k
    counting 1, 2, ... through the notebook, so no two exercises anywhere share a number."""
    if path.name in REWRITTEN:
        pytest.skip(f"{path.name} is being rewritten; number its exercises N.k when it lands")
    nb = nbformat.read(path, as_version=4)
    labels = exercise_labels(nb)
    n = int(path.name[:2])
    assert labels == [(n, k) for k in range(1, len(labels) + 1)], f"{path.name}: exercise labels {labels}"
    checked = {m for c in nb.cells if c.cell_type == "code" for m in re.findall(r"ex\.check_(\w+)", c.source)}
    closing = nb.cells[-1].source
    open_ones = EXERCISE_LABEL.findall(closing)
    assert len(labels) - len(open_ones) == len(checked), (
        f"{path.name}: {len(checked)} checked exercises ({sorted(checked)}) but {len(labels) - len(open_ones)} labels")
    assert open_ones and not re.search(r"^\d+\. ", closing, re.MULTILINE), (
        f"{path.name}: the closing exercises must be labelled - **{n}.k**, not a numbered list")


def test_no_two_exercises_share_a_number():
    seen: dict[tuple[int, int], str] = {}
    for path in NOTEBOOKS:
        for label in exercise_labels(nbformat.read(path, as_version=4)):
            assert label not in seen, f"exercise {label[0]}.{label[1]} is in {seen[label]} and {path.name}"
            seen[label] = path.name
    assert len(seen) >= 40
