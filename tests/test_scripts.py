"""Every script in scripts/ and benchmark in benchmarks/ answers `--help` and runs at a tiny size, in a subprocess
on one thread: a changed default in the library breaks this test, not a user's benchmark."""

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ldm_lite import cli
from ldm_lite.ldm import LatentDiffusion

ROOT = Path(__file__).resolve().parent.parent
PRETRAINED = ROOT / "data" / "pretrained"
SCRIPTS = sorted(p.relative_to(ROOT).as_posix() for d in ("scripts", "benchmarks") for p in (ROOT / d).glob("[!_]*.py"))
# scripts/_arms.py is not a script: what the A/B scripts share

# script -> its arguments at a tiny size ({tmp}: a fresh folder) and what its output must contain
TINY = {
    "benchmarks/bench_autoencoder.py": (["--smoke"], "ratio ldm_lite / diffusers"),
    "benchmarks/bench_datasets.py": (["--smoke"], "| mnist 32x32x3"),
    "benchmarks/bench_exercises.py": (["--smoke"], "| conv2d_flops | True |"),
    "benchmarks/bench_image_to_image.py": (["--smoke", "--out", "{tmp}/i2i"], "## Semantic synthesis"),
    "benchmarks/bench_text_cache.py": (["--smoke"], "| frozen text, text cache |"),
    "benchmarks/bench_training_loop.py": (["--smoke"], "| train_ldm, latent cache |"),
    "benchmarks/bench_unet.py": (["--smoke", "--out", "{tmp}/unet.md"], "+ cross-attn (L=8, d=64) | sample |"),
    "benchmarks/inpainting_efficiency.py": (["--arm", "both", "--smoke", "--out", "{tmp}/ie"], "| LDM-4 | 3x8x8 |"),
    "benchmarks/run_tradeoff.py": (["--smoke", "--out", "{tmp}/tradeoff"], "| f | latent |"),
    "scripts/compare_beta_schedules.py": (["--task", "sr", "--smoke", "--out", "{tmp}/beta"],
                                          "| 0.0015 → 0.0155 (paper) |"),
    "scripts/conditioning_levers.py": (["--lever", "layout-tokens", "--smoke", "--out", "{tmp}/levers"],
                                       "| layout-tokens | tokens | `ldm-kl-f4-shapes32-layout` condition=layout-tokens |"),
    "scripts/crash_soak.py": (["--smoke"], "every checkpoint loaded"),  # exits 1 unless all runs are bit-identical
    "scripts/evaluate_conditional.py": (["--smoke", "--model", str(PRETRAINED / "ldm-kl-f4-shapes32-text"),
                                         "--out", "{tmp}/metrics.json", "--samples", "{tmp}/grid.png",
                                         "--ship", "{tmp}/shipped"], '"guidance_1"'),
    "scripts/guidance_curve.py": ([str(ROOT / "benchmarks" / "results" / "guidance"), "--out", "{tmp}/curve.png"], ""),
    "benchmarks/first_stages.py": (["--smoke"], "| 1 | 3 | 3x64x64 |"),
    "benchmarks/free_colours.py": (["--smoke"], '"condition_kind": "layout"'),
    "scripts/rename_metrics.py": (["--smoke"], "1 of 1 file(s) rewritten"),
    "scripts/rejudge.py": (["--smoke", "--out", "{tmp}/rejudge"], "| trade-off kept samples | n | old judge | new judge |"),
    "scripts/main_job_recipe.py": (["tiny", "--smoke", "--out", "{tmp}"], 'RESULT {"name": "tiny"'),
}
NO_SMOKE_FLAG = {"guidance_curve.py"}  # they train nothing: paths make them tiny
FAST = {"scripts/guidance_curve.py"}  # plots only; the others train or sample (5-25 s each): `slow`


def env(tmp_path: Path, **extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "OMP_WAIT_POLICY": "PASSIVE", "MPLBACKEND": "Agg", "LDM_LITE_OUTPUTS": str(tmp_path / "outputs"),
            "LDM_LITE_SMOKE": "0", **extra}


def run(args: list[str], tmp_path: Path, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env(tmp_path, **extra), capture_output=True,
                          text=True, timeout=timeout)


def test_every_script_has_a_tiny_case():
    assert sorted(TINY) == SCRIPTS, "a new script needs its tiny-size case here"


# One process runs every script's --help (torch is imported once): each must print its usage and exit 0 without
# starting work, writing files or taking --help for a path.
HELP_RUNNER = """
import contextlib, io, json, runpy, sys
report = {}
for path in sys.argv[1:]:
    sys.argv, out, code = [path, "--help"], io.StringIO(), "returned without exiting"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_path(path, run_name="__main__")
    except SystemExit as e:
        code = e.code
    except Exception as e:
        code = repr(e)
    report[path] = [code, out.getvalue()]
print(json.dumps(report))
"""


def test_every_script_answers_help_without_starting_work(tmp_path):
    r = run(["-c", HELP_RUNNER, *(str(ROOT / s) for s in SCRIPTS)], tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.splitlines()[-1])
    bad = {Path(p).name: (code, out[-300:]) for p, (code, out) in report.items()
           if code not in (0, None) or not out.startswith("usage:")
           or ("--smoke" not in out and Path(p).name not in NO_SMOKE_FLAG)}
    assert not bad, bad
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "--help wrote files"


# The tiny runs start from a fork server: one process that has imported torch (with torch._dynamo, which every
# optimizer pulls in), numpy and matplotlib, ~4 CPU-s that 16 fresh interpreters would each pay again. Each script
# still runs in a process of its own (forked, so no state passes between scripts), as `python script.py` runs it:
# its own argv, sys.path[0], working folder and environment, its own imports of ldm_lite (which reads
# LDM_LITE_OUTPUTS when imported), stdout and stderr to files, and its exit code back.
FORK_SERVER = """
import atexit, json, os, runpy, sys, traceback
import matplotlib.pyplot, numpy, torch, torch._dynamo  # noqa: F401 (what the scripts would each import again)
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(req["cwd"])
            os.environ.clear()
            os.environ.update(req["env"])
            for fd, name in ((1, "stdout"), (2, "stderr")):
                os.dup2(os.open(req[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            sys.argv, sys.path[0] = req["argv"], os.path.dirname(req["argv"][0])
            try:
                runpy.run_path(req["argv"][0], run_name="__main__")
                code = 0
            except SystemExit as e:  # as the interpreter ends: None -> 0, an int as is, a message -> stderr and 1
                if e.code is None or isinstance(e.code, int):
                    code = e.code or 0
                else:
                    print(e.code, file=sys.stderr)
                    code = 1
            atexit._run_exitfuncs()
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(json.dumps(pid), flush=True)
    print(json.dumps(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])), flush=True)
"""


@pytest.fixture(scope="module")
def fork_server(tmp_path_factory):
    proc = subprocess.Popen([sys.executable, "-c", FORK_SERVER], cwd=tmp_path_factory.mktemp("fork-server"),
                            env=env(tmp_path_factory.getbasetemp()), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)

    def run_script(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
        out, err = cwd.parent / "stdout.txt", cwd.parent / "stderr.txt"
        proc.stdin.write(json.dumps({"argv": args, "cwd": str(cwd), "env": env(cwd), "stdout": str(out),
                                     "stderr": str(err)}) + "\n")
        proc.stdin.flush()
        pid = json.loads(proc.stdout.readline())
        timer = threading.Timer(timeout, os.kill, (pid, signal.SIGKILL))
        timer.start()
        code = json.loads(proc.stdout.readline())
        if not timer.is_alive():
            raise subprocess.TimeoutExpired(args, timeout)
        timer.cancel()
        return subprocess.CompletedProcess(args, code, out.read_text(), err.read_text())

    yield run_script
    proc.stdin.close()
    proc.wait(timeout=60)


@pytest.mark.parametrize("script", [pytest.param(s, marks=[] if s in FAST else [pytest.mark.slow])
                                    for s in SCRIPTS if TINY[s] is not None])
def test_script_runs_at_a_tiny_size(script, tmp_path, fork_server):
    args, expect = TINY[script]
    tmp = tmp_path / "work"
    tmp.mkdir()
    r = fork_server([str(ROOT / script), *(a.format(tmp=tmp) for a in args)], tmp)
    assert r.returncode == 0, f"{script} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    assert expect in r.stdout, r.stdout[-3000:]
    if script == "scripts/evaluate_conditional.py":
        metrics = json.loads((tmp / "metrics.json").read_text())
        assert "guidance_1" in metrics and "--smoke" in metrics["command"].split()
        assert (tmp / "grid.png").stat().st_size > 1000
        shipped = sorted(p.name for p in (tmp / "shipped").iterdir())
        assert shipped == ["README.md", "config.json", "metrics.json", "model.safetensors"]
        LatentDiffusion.from_pretrained(tmp / "shipped")  # a model folder that loads
    if script == "scripts/guidance_curve.py":
        assert (tmp / "curve.png").stat().st_size > 10_000


def test_ldm_lite_bench_passes_smoke_to_every_benchmark(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    assert cli.main(["bench", "--smoke"]) == 0
    ran = sorted(Path(cmd[1]).relative_to(ROOT).as_posix() for cmd in calls)
    assert ran == [s for s in SCRIPTS if s.startswith("benchmarks/bench_")]
    assert all(cmd[0] == sys.executable and cmd[2:] == ["--smoke"] for cmd in calls)


def test_committed_metrics_use_the_one_set_of_names():
    """Every committed metrics.json / results JSON uses `fid` (+ `fid_features`), never the old per-judge names."""
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "rename_metrics.py"), "--check"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:]

