import os

import pytest

# Tests never touch a hub, and OpenMP threads must not spin-wait on this shared 2-core machine.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def notebook_outputs(tmp_path_factory):
    """One `LDM_LITE_OUTPUTS` for every run of the notebooks in a session, in the browser (test_browser) and headless
    (test_notebooks): what a notebook trains on its first run (`ll.recipes.load_or_train`, notebook 07's live
    sweep) its second run loads, as on a learner's second run. test_browser also leaves each notebook it ran here,
    as JupyterLab saved it (`browser-runs/`), and test_notebooks checks those outputs instead of running it again."""
    return tmp_path_factory.mktemp("notebook-outputs")
