"""The notebooks as a learner sees them: JupyterLab in a real browser (Debian's Chromium driven by Playwright).

How it works
1. The `lab` fixture copies every notebooks/*.ipynb (discovered, so a new notebook is covered without editing
   this file) into a temporary folder, so JupyterLab's autosave can never write outputs into the repository, and
   writes small fixture notebooks beside them (`fixtures/panels.ipynb`: two good panels and a broken one,
   `fixtures/slow_cell.ipynb`). Each copy of a notebook ends with a cell that prints the notebook's `SMOKE` flag.
   It starts `jupyter lab` on 127.0.0.1 at a free port, without token, with `LDM_LITE_SMOKE=1`,
   `OMP_WAIT_POLICY=PASSIVE`, the Hugging Face offline variables and `LDM_LITE_OUTPUTS` in the session's notebook
   outputs folder (conftest.py's `notebook_outputs`: the headless runs of test_notebooks load what these trained),
   and user settings in a temporary folder:
   no news / update notifications (they would need the internet) and `windowingMode: "none"` (every cell stays
   in the page, so nothing depends on scrolling). The server is stopped by its PID at the end.
2. `check_notebook` opens a notebook, runs Run > Run All Cells from the menu bar (as a learner does), waits until
   every code cell has run (or one failed) and the kernel is idle (Run All once more, with a warning, when JupyterLab
   cancelled the queued cells because it replaced the kernel at start-up: `_wait_until_run`), then reports a problem for:
   - a cell error (a traceback in an output), text left in a panel's `.ldm-panel-error` box;
   - "Loading widget..." still shown (the widget manager never rendered the widget);
   - a browser console error not matched by ALLOWED_CONSOLE_ERRORS;
   - each `.ldm-panel` (the convention of `ldm_lite/widgets.py`): its `.ldm-main-control` is moved (slider:
     focus the handle, press ArrowRight, or ArrowLeft when it sits at its end; dropdown: select another option;
     toggle buttons: click another one) and its `.ldm-panel-image` must get a new `src` within IMAGE_TIMEOUT_S.
   Screenshots of the notebook and of every panel after its move go to outputs/screenshots/<notebook>/.
   Then File > Save Notebook, and the saved notebook (its outputs as the kernel sent them) is copied to
   `<notebook outputs>/browser-runs/`: test_notebooks checks those outputs instead of running the notebook a second
   time headless (it runs it itself where this file did not, e.g. without Chromium or with `-m "not browser"`).
3. `test_notebook_in_browser` asserts no problems for every notebook. `test_checker_catches_a_broken_callback`
   runs the same checker on the fixture whose third panel's callback raises once the control moves, and asserts
   that it reports that failure and nothing about the two good panels: breaking a widget's callback fails this file.
   `test_checker_reruns_a_cancelled_run_all` replaces the kernel of the slow fixture while its cell is queued and
   asserts that the checker runs it again (with a warning) and passes.

The tests skip, with the reason printed by `pytest -ra`, only where /usr/bin/chromium is missing (`make test`
installs it with apt-get where it can). Never run `playwright install`: it downloads a browser.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from ldm_lite.paths import OUTPUTS_DIR

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from notebook_runs import SMOKE_CELL, saved_run  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # JupyterLab + Chromium: minutes

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = OUTPUTS_DIR / "screenshots"

RUN_TIMEOUT_S = 300  # one notebook, all cells, smoke mode
IMAGE_TIMEOUT_S = 60  # a panel redraw after its control moved
WIDGET_TIMEOUT_S = 30  # "Loading widget..." must be gone by then

# JupyterLab's own messages when it runs offline; nothing else may log a console error. (None occurred on this machine
# with the settings below; the list exists so that a fresh machine without internet passes for the right reason.)
# Each entry is matched against "<message> (<url of the source>)".
ALLOWED_CONSOLE_ERRORS = (
    re.compile(r"Failed to load resource: .*\(\S*/lab/api/(news|update)"),  # news / update check (needs internet)
    re.compile(r"Failed to fetch news"),  # the same check, reported by the announcements plugin
    # JupyterLab's debugger restoring its state while the kernel is still starting (seen on a loaded machine)
    re.compile(r"Could not restore the debugger state: Canceled future for debug_request .*\(\S*/static/lab/"),
)

LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
    # autoStartDefaultKernel: start the notebook's own kernel without a "Select Kernel" dialog (a start-up race)
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none", "autoStartDefaultKernel": True},
}

GOOD_PANELS = """
import torch, ldm_lite as ll
from IPython.display import display
image = ll.datasets.shapes(resolution=16, n=2, seed=0)[0]["image"]
# t starts at its maximum, so the checker must fall back to ArrowLeft; the second panel has a dropdown
display(ll.widgets.forward_noise_panel(image, lambda x: x, lambda z: z, ll.schedule.Schedule.linear(T=100), t=99))
maps = torch.softmax(torch.randn(2, 16, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
ll.widgets.attention_panel(image, maps, ["a", "red", "square"])
"""
BROKEN_PANEL = """
images = ll.datasets.shapes(resolution=16, n=2, seed=0)[0]["image"][None]
calls = []
def recon(f, kind, x):  # a deliberately broken callback: works for the first f, raises once the control moves
    calls.append(f)
    if len(calls) > 1:
        raise RuntimeError("deliberately broken panel callback")
    return dict(recon=x, latent=x[:, :, ::f, ::f], psnr=30.0, lpips=None)
ll.widgets.f_panel(recon, images, fs=(2, 4, 8), kinds=("kl",))
"""

SLOW_FIXTURE = """
import time
time.sleep(5)  # still queued when test_checker_reruns_a_cancelled_run_all replaces the kernel
"""


# ---------------------------------------------------------------------------------------------- the server
@dataclass
class Lab:
    url: str
    root: Path
    pid: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_notebook(path: Path, *sources: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(source).strip()) for source in sources]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


def _api(lab: Lab, path: str, method: str = "GET"):
    with urllib.request.urlopen(urllib.request.Request(f"{lab.url}{path}", method=method), timeout=10) as r:
        body = r.read()
    return json.loads(body) if body else None


@pytest.fixture(scope="module")
def lab(tmp_path_factory, notebook_outputs):
    if not CHROMIUM.exists():
        msg = f"browser tests skipped: {CHROMIUM} is missing (apt-get install -y chromium chromium-driver)"
        warnings.warn(msg, stacklevel=1)
        pytest.skip(msg)
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"
    (root / "notebooks").mkdir(parents=True)
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell(SMOKE_CELL))  # the notebook's own flag, read in its kernel
        nbformat.write(nb, root / "notebooks" / path.name)
    _write_notebook(root / "fixtures" / "panels.ipynb", GOOD_PANELS, BROKEN_PANEL)
    _write_notebook(root / "fixtures" / "slow_cell.ipynb", SLOW_FIXTURE)
    for name, value in LAB_SETTINGS.items():
        (tmp / "settings" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / "settings" / name).write_text(json.dumps(value))

    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # kernels pick matplotlib's inline backend
    env.update(LDM_LITE_SMOKE="1", OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", LDM_LITE_OUTPUTS=str(notebook_outputs),  # shared with test_notebooks
               JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    port = _free_port()
    log = open(tmp / "jupyterlab.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--IdentityProvider.token=",
         "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=None"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    lab = Lab(f"http://127.0.0.1:{port}", root, proc.pid)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                _api(lab, "/api/status")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start; see {tmp / 'jupyterlab.log'}:\n"
                                       f"{(tmp / 'jupyterlab.log').read_text()[-3000:]}") from None
                time.sleep(0.5)
        yield lab
    finally:
        os.kill(proc.pid, signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


# ---------------------------------------------------------------------------------------------- the checker
# The run's state: "done" (every code cell ran, or one failed), "cancelled" (the kernel is idle, no cell is queued or
# failed, yet some never ran: JupyterLab cancelled the queued executions without a word, see _wait_until_run) or
# null (still running).
RUN_STATE_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent.trim());
  const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  const idle = !indicator || indicator.getAttribute('data-status') === 'idle';
  if (!idle || prompts.some(p => p.includes('*'))) return null;
  const tracebacks = [...panel.querySelectorAll('.jp-OutputArea-output')].filter(e => /Traceback/.test(e.textContent));
  const all = prompts.every(p => /\\[\\d+\\]/.test(p));
  // the cell that ran while its kernel was shut down may show a KeyboardInterrupt: part of a cancel, not a failure
  if (all || tracebacks.some(e => !/KeyboardInterrupt/.test(e.textContent))) return 'done';
  return document.querySelector('.jp-Dialog') ? null : 'cancelled';  // a dialog (e.g. "Kernel Restarting") is no cancel
}"""
PROMPTS_JS = """() => [...document.querySelectorAll(
  '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')].map(e => e.textContent.trim())"""


REDRAWN_JS = """([panel, old]) => {
  const img = panel.querySelector('img.ldm-panel-image'), err = panel.querySelector('.ldm-panel-error');
  return img.getAttribute('src') !== old || (err !== null && err.textContent.trim() !== '');
}"""


STARTED_JS = """() => [...document.querySelectorAll(
  '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')].some(e => /\\[(\\*|\\d+)\\]/.test(e.textContent))"""


def _accept_kernel_dialog(page) -> None:
    """JupyterLab asks "Select Kernel" when it opened the notebook before it knew the kernelspecs (a race at
    start-up); a learner clicks Select, which keeps the notebook's own kernel (python3)."""
    dialog = page.locator(".jp-Dialog:has-text('Select Kernel')")
    for _ in range(3):
        if not dialog.count():
            return
        try:
            dialog.locator("button.jp-mod-accept").click(timeout=5_000)
            dialog.wait_for(state="detached", timeout=10_000)
        except Exception:  # a busy machine: the dialog may still be rendering; try again, then with Enter
            page.keyboard.press("Enter")


def _run_all_cells(page) -> None:
    """Run > Run All Cells from the menu bar; again if no cell started (the kernel was still connecting)."""
    for _ in range(4):
        _accept_kernel_dialog(page)
        page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
        try:
            page.wait_for_function(STARTED_JS, timeout=15_000, polling=250)
            return
        except Exception:
            page.keyboard.press("Escape")
    raise AssertionError("Run > Run All Cells started no cell (is the kernel alive?)")


def _kernel_ids(lab: Lab, rel_path: str) -> list[str]:
    return [s["kernel"]["id"] for s in _api(lab, "/api/sessions") if s["path"] == rel_path and s.get("kernel")]


def _wait_until_run(page, lab: Lab, rel_path: str) -> None:
    """Wait until every code cell has run (or one failed). JupyterLab can cancel a queued Run All without a word: when
    the notebook's kernel connection is replaced while cells are queued (a start-up race seen on a loaded machine:
    a kernel started, shut down and started again within a second), every queued execution ends as "Canceled future"
    and its prompt goes back to "[ ]", with the kernel idle and no traceback, so nothing would ever finish. Then the
    checker runs Run All again (as a learner would) and says so in a warning; a kernel that dies shows JupyterLab's
    "Kernel Restarting" dialog and is not retried. Fails with the cells' prompts instead of a bare TimeoutError."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    reruns = 0
    while time.monotonic() < deadline:
        state = page.evaluate(RUN_STATE_JS)
        if state == "cancelled":  # confirm after a pause: a state seen once can be a repaint between two cells
            time.sleep(2)
            state = page.evaluate(RUN_STATE_JS)
        if state == "done":
            return
        if state == "cancelled" and reruns < 2:
            reruns += 1
            prompts = page.evaluate(PROMPTS_JS)
            ran = sum(bool(re.fullmatch(r"\[\d+\]:?", p)) for p in prompts)
            warnings.warn(f"{rel_path}: JupyterLab cancelled Run All after {ran} of {len(prompts)} code cells (kernel "
                          f"now {_kernel_ids(lab, rel_path)}); running all cells again", stacklevel=1)
            _run_all_cells(page)
            deadline = max(deadline, time.monotonic() + RUN_TIMEOUT_S)
            continue
        time.sleep(0.5)
    prompts = page.evaluate(PROMPTS_JS)
    raise AssertionError(f"{rel_path}: the cells did not all run within {RUN_TIMEOUT_S} s (state "
                         f"{page.evaluate(RUN_STATE_JS)!r}, {reruns} reruns, kernel {_kernel_ids(lab, rel_path)}); "
                         f"prompts: {' '.join(prompts)}")


def _console_problem(text: str) -> bool:
    return not any(p.search(text) for p in ALLOWED_CONSOLE_ERRORS)


def _move_main_control(panel) -> str:
    """Move a panel's main control the way a learner does; returns what was done (for messages)."""
    control = panel.locator(".ldm-main-control").first
    control.scroll_into_view_if_needed()
    if control.locator(".noUi-handle").count():  # ipywidgets slider (IntSlider, SelectionSlider, ...)
        handle = control.locator(".noUi-handle").first
        readout = control.locator(".widget-readout")
        before = readout.first.inner_text() if readout.count() else None
        handle.focus()
        handle.press("ArrowRight")
        if readout.count():
            try:  # the readout follows the key press in the browser itself
                readout.first.page.wait_for_function("([el, old]) => el.textContent !== old",
                                                     arg=[readout.first.element_handle(), before], timeout=3_000)
            except Exception:  # already at its maximum
                handle.press("ArrowLeft")
                return "slider: ArrowLeft"
        return "slider: ArrowRight"
    select = control.locator("select")
    if select.count():
        options = select.first.locator("option")
        current = select.first.input_value()
        values = [options.nth(i).get_attribute("value") for i in range(options.count())]
        other = next((v for v in values if v != current), None)
        if other is None:
            return "dropdown with a single option"
        select.first.select_option(other)
        return f"dropdown: option {other}"
    buttons = control.locator("button:not(.mod-active)")
    if buttons.count():
        buttons.first.click()
        return "toggle buttons: click"
    text = control.locator("input[type='text'], textarea")
    if text.count():  # a prompt box: type another prompt and press Enter, as a learner does
        current = text.first.input_value()
        new = current.replace("red", "blue") if "red" in current else current + " blue"
        text.first.fill(new)
        text.first.press("Enter")
        return f"text: {new!r} + Enter"
    raise AssertionError("main control is neither a slider, a dropdown, toggle buttons nor a text box")


def _save_notebook(page, lab: Lab, rel_path: str) -> None:
    """File > Save Notebook, as a learner does; returns once the server has the new file."""
    before = _api(lab, f"/api/contents/{rel_path}?content=0")["last_modified"]
    page.click(".lm-MenuBar-itemLabel:text-is('File')")
    page.click(".lm-Menu-itemLabel:text-is('Save Notebook')")
    deadline = time.monotonic() + 30
    while _api(lab, f"/api/contents/{rel_path}?content=0")["last_modified"] == before:
        if time.monotonic() > deadline:
            raise AssertionError(f"{rel_path}: File > Save Notebook did not save within 30 s")
        time.sleep(0.2)


def _read_when_written(path: Path, timeout_s: float = 30):
    """The notebook at `path` once the server has finished writing it: jupyter_server writes a saved file in place
    (its backup copy is elsewhere), so a read right after the save starts can see an empty or partial file."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return nbformat.read(path, as_version=4)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def check_notebook(browser, lab: Lab, rel_path: str, after_run_all=None, save_to: Path | None = None) -> list[str]:
    """Open `rel_path` in JupyterLab, run all cells, move every panel's main control; returns the problems found.
    `after_run_all()`, if given, is called once the first cell started (a test replaces the kernel there);
    `save_to`, if given, receives the notebook as JupyterLab saved it after the run (its outputs)."""
    problems: list[str] = []
    shots = SCREENSHOTS / Path(rel_path).stem
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.text} ({m.location.get('url', '')})") if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(f"uncaught: {e}"))
    try:
        page.goto(f"{lab.url}/lab/tree/{rel_path}?reset")
        page.wait_for_selector(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']",
                               timeout=120_000)
        time.sleep(1)  # let a "Select Kernel" dialog appear if JupyterLab is going to ask
        try:
            _run_all_cells(page)
        except Exception:
            page.screenshot(path=str(shots / "run-all-failed.png"))
            raise
        try:
            if after_run_all is not None:
                after_run_all()
            _wait_until_run(page, lab, rel_path)
        except Exception:
            page.screenshot(path=str(shots / "timeout.png"))
            raise
        notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
        for out in notebook.locator(".jp-OutputArea-output").all():
            text = out.inner_text()
            if "Traceback" in text:
                problems.append(f"cell error: {text[-600:]}")
        try:
            page.wait_for_function("() => !document.body.innerText.includes('Loading widget...')",
                                   timeout=WIDGET_TIMEOUT_S * 1000)
        except Exception:
            problems.append('"Loading widget..." is still shown: a widget did not render')
        page.screenshot(path=str(shots / "notebook.png"))

        panels = notebook.locator(".ldm-panel")
        for i in range(panels.count()):
            panel = panels.nth(i)
            image = panel.locator("img.ldm-panel-image").first
            if not image.count():
                problems.append(f"panel {i}: no img.ldm-panel-image")
                continue
            if not image.evaluate("img => img.complete && img.naturalWidth > 0"):
                problems.append(f"panel {i}: its image did not load")
            old = image.get_attribute("src")
            how = _move_main_control(panel)
            err = panel.locator(".ldm-panel-error").first
            try:  # a redraw gives a new src; a failing one fills the error box (then stop waiting at once)
                page.wait_for_function(REDRAWN_JS, arg=[panel.element_handle(), old], timeout=IMAGE_TIMEOUT_S * 1000)
            except Exception:
                pass
            if image.get_attribute("src") == old:
                problems.append(f"panel {i}: image did not change after moving its main control ({how})")
            panel.screenshot(path=str(shots / f"panel-{i}.png"))
            if err.count() and err.inner_text().strip():
                problems.append(f"panel {i} shows an error: {err.inner_text().strip()[-600:]}")
        problems += [f"console error: {c[:300]}" for c in console if _console_problem(c)]
        if save_to is not None:
            _save_notebook(page, lab, rel_path)
            save_to.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(_read_when_written(lab.root / rel_path), save_to)
    finally:
        page.close()
        for s in _api(lab, "/api/sessions"):  # free the kernel's memory before the next notebook
            _api(lab, f"/api/sessions/{s['id']}", method="DELETE")
    return problems


# ---------------------------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_in_browser(path, lab, browser, notebook_outputs):
    problems = check_notebook(browser, lab, f"notebooks/{path.name}", save_to=saved_run(notebook_outputs, path.name))
    assert not problems, f"{path.name} in JupyterLab:\n" + "\n".join(problems)


def test_checker_catches_a_broken_callback(lab, browser):
    problems = check_notebook(browser, lab, "fixtures/panels.ipynb")
    assert problems and all(p.startswith("panel 2") for p in problems), problems  # panels 0 and 1 are good
    assert any("image did not change" in p for p in problems), problems
    assert any("deliberately broken panel callback" in p for p in problems), problems


def _replace_kernel(lab: Lab, rel_path: str) -> None:
    """What JupyterLab's start-up race does: the notebook's session gets a new kernel while its cells are queued."""
    (session,) = [s for s in _api(lab, "/api/sessions") if s["path"] == rel_path]
    request = urllib.request.Request(f"{lab.url}/api/sessions/{session['id']}", method="PATCH",
                                     data=json.dumps({"kernel": {"name": "python3"}}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        assert json.loads(r.read())["kernel"]["id"] != session["kernel"]["id"]


def test_checker_reruns_a_cancelled_run_all(lab, browser):
    """A kernel replaced while Run All is queued cancels the cells silently (every prompt back to "[ ]", kernel idle):
    the checker runs them again and passes, with a warning, instead of waiting RUN_TIMEOUT_S for nothing."""
    path = "fixtures/slow_cell.ipynb"
    with pytest.warns(UserWarning, match="JupyterLab cancelled Run All after 0 of 1 code cells"):
        assert check_notebook(browser, lab, path, after_run_all=lambda: _replace_kernel(lab, path)) == []


def test_console_allow_list_is_narrow():
    """Only JupyterLab's offline news/update messages and its own debugger-restore race are forgiven; a widget's error is not."""
    assert not _console_problem("Failed to load resource: the server responded with a status of 404 (Not Found) "
                                "(http://127.0.0.1:8888/lab/api/news)")
    assert _console_problem("Failed to load resource: the server responded with a status of 404 (Not Found) "
                            "(http://127.0.0.1:8888/lab/extensions/@jupyter-widgets/jupyterlab-manager/static/x.js)")
    assert _console_problem("Error: Could not create a view for model id 1234 ()")
    assert not _console_problem("Could not restore the debugger state: Canceled future for debug_request message "
                                "before replies were done (http://127.0.0.1:1/static/lab/jlab_core.abc.js?v=abc)")
    assert _console_problem("Could not restore the debugger state: Canceled future for debug_request message "
                            "before replies were done (http://127.0.0.1:1/lab/extensions/ldm/x.js)")
