"""The install paths agree: pyproject.toml and environment.yml list the same packages; the CLI is declared."""

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
