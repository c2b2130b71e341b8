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
    sweep) its second run loads, as on a learner's second run. In a whole-suite run the browser run takes the
    training branch and the headless run the loading branch; either file run alone trains."""
    return tmp_path_factory.mktemp("notebook-outputs")
