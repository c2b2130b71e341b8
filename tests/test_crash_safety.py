"""Nothing is lost: a SIGKILL at any moment of a checkpoint write leaves a loadable checkpoint and resume ends with
the same weights as an uninterrupted run; a failed write (full disk) keeps the previous checkpoint; a checkpoint
folder that links outside itself, or one from a newer ldm_lite, is refused."""

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ldm_lite as ll
from ldm_lite import checkpoint
from ldm_lite.checkpoint import CheckpointError

HELPERS = Path(__file__).parent / "helpers"
sys.path.insert(0, str(HELPERS))
from crash_train import train  # noqa: E402
from ddp_train import tiny_ldm  # noqa: E402


def _run(out: Path, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), str(HELPERS)])}
    env.pop(checkpoint.CRASH_ENV, None)
    if crash_at:
        env[checkpoint.CRASH_ENV] = crash_at
    return subprocess.run([sys.executable, str(HELPERS / "crash_train.py"), str(out)], env=env, capture_output=True,
                          text=True, timeout=300)


def _resume_here(out: Path) -> None:
    """What a restarted `crash_train.py` does, in this process on its one thread (no second torch import): the
    killed run and the reference stay subprocesses, so the comparison is still across processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(str(out))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    assert _run(out).returncode == 0  # the same interpreter settings (1 thread) as the killed runs
    return load_file(str(out / "model" / "model.safetensors"))


# "files": inside the new folder, half written; "swap": the old folder moved aside, the new not yet in place (the
# only moment with no folder under the checkpoint's name); "cleanup": the new one in place, the old not deleted.
@pytest.mark.slow
@pytest.mark.parametrize("crash_at", ["files:2", "swap:1", "cleanup:1"])
def test_sigkill_inside_a_checkpoint_write_loses_nothing(tmp_path, reference, crash_at):
    killed = _run(tmp_path, crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    ckpt = checkpoint.recover_dir(tmp_path / "checkpoint")  # what resume=True does first
    assert ckpt is not None and not list(tmp_path.glob("checkpoint.*-*")), "leftover folders not cleaned"
    step = json.loads((ckpt / "state.json").read_text())["step"]
    assert step in (2, 4)  # the last complete checkpoint before the kill
    ll.ldm.LatentDiffusion.from_pretrained(ckpt)  # it loads
    _resume_here(tmp_path)
    final = load_file(str(tmp_path / "model" / "model.safetensors"))
    assert final.keys() == reference.keys()
    for k, v in reference.items():
        assert torch.equal(final[k], v), k


def test_full_disk_keeps_the_previous_checkpoint_and_says_what_to_do(tmp_path, monkeypatch):
    real, calls = checkpoint.save_file, []

    def save_file(tensors, path, *a, **kw):
        calls.append(path)
        if path.endswith("training.safetensors") and len([c for c in calls if c.endswith("training.safetensors")]) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, *a, **kw)

    monkeypatch.setattr(checkpoint, "save_file", save_file)
    with pytest.raises(CheckpointError, match="No space left on device.*previous checkpoint is intact.*Free disk"):
        train(str(tmp_path))
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["step"] == 2
    assert not list(tmp_path.glob("checkpoint.*-*"))
    ll.ldm.LatentDiffusion.from_pretrained(tmp_path / "checkpoint")


def test_unwritable_output_folder_gives_a_clear_error(tmp_path, monkeypatch):
    def mkdir(self, *a, **kw):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(CheckpointError, match="Permission denied.*writable"):
        checkpoint.save_model(tiny_ldm(), tiny_ldm().config, tmp_path / "m")


def test_checkpoint_linking_outside_itself_is_refused(tmp_path):
    ldm = tiny_ldm()
    ldm.save_pretrained(tmp_path / "m")
    outside = tmp_path / "elsewhere.safetensors"
    (tmp_path / "m" / "model.safetensors").rename(outside)
    (tmp_path / "m" / "model.safetensors").symlink_to(outside)
    with pytest.raises(CheckpointError, match="symlink.*outside the checkpoint folder"):
        ll.ldm.LatentDiffusion.from_pretrained(tmp_path / "m")


def test_checkpoint_from_a_newer_version_names_the_fix(tmp_path):
    tiny_ldm().save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**meta, "format": checkpoint.FORMAT + 1}))
    with pytest.raises(CheckpointError, match="newer ldm_lite.*upgrade"):
        ll.ldm.LatentDiffusion.from_pretrained(tmp_path / "m")


@pytest.mark.slow
def test_a_dying_torchrun_process_stops_the_others_with_a_message(tmp_path):
    """Rank 1 exits mid-run: the whole job ends (non-zero) well within the timeout instead of hanging."""
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", "LDM_LITE_DDP_TIMEOUT_S": "60"}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(HELPERS / "ddp_train.py"), str(tmp_path / "run"), "--rank1-dies"],
                          env=env, timeout=240, capture_output=True, text=True)
    assert proc.returncode != 0 and time.time() - t0 < 200
    assert "exitcode" in proc.stderr and "3" in proc.stderr  # torchrun names the failed rank and its exit code
