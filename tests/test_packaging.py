"""The install paths agree: pyproject.toml and environment.yml list the same packages; the CLI is declared."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    want = {_name(r) for r in py["dependencies"] + py["optional-dependencies"]["test"]}
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    got = {_name(line.strip()[2:]) for line in lines[start + 1:] if line.strip().startswith("- ") and "-e ." not in line}
    assert got == want, f"only in environment.yml: {got - want}; only in pyproject: {want - got}"


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and ci.strip().splitlines()[-1] == "make test"


def test_cli_help_lists_the_stages():
    out = subprocess.run([sys.executable, "-m", "ldm_lite.cli", "--help"], capture_output=True, text=True, check=True)
    for stage in ("main", "tour", "train-ae", "train-ldm", "sample", "evaluate", "bench", "experiment",
                  "train-classifier", "train-segmenter"):
        assert stage in out.stdout


def test_gitignore_keeps_outputs_and_cache_out():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "outputs/" in ignored and "data/cache/" in ignored


@pytest.mark.skipif(subprocess.run(["which", "make"], capture_output=True).returncode != 0, reason="no make")
def test_make_install_stops_with_the_fix_when_torchvision_does_not_import_beside_torch(tmp_path):
    """A CPU torch beside PyPI's (CUDA) torchvision fails at `import torchvision`; `make install` must say so and stop."""
    broken = tmp_path / "site" / "torchvision"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    make = ["make", "-s", "-C", str(ROOT), "install", f"PYTHON={sys.executable}", "PIP=true"]  # pip: a no-op here
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    bad = subprocess.run(make, capture_output=True, text=True, env={**env, "PYTHONPATH": str(tmp_path / "site")})
    assert bad.returncode != 0
    assert "torchvision does not import beside the installed torch" in bad.stdout
    assert "operator torchvision::nms does not exist" in bad.stdout and "torch==2.14.1 torchvision==0.29.1" in bad.stdout
    good = subprocess.run(make, capture_output=True, text=True, env=env)  # this test's own (working) torchvision
    assert good.returncode == 0, good.stdout + good.stderr
