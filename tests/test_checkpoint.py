"""Training checkpoints: Ctrl-C saves one, resuming from it is bit-identical (CPU), and a file that
is not one of ours is refused without unpickling it, named, and moved aside."""

import logging
import os
import pickle
import signal

import pytest
import torch

from claimbench.train.checkpoint import load_checkpoint, save_checkpoint
from claimbench.train.loop import train_models
from tests.helpers import small_config, tiny_data

RUNS = [small_config(0, name="adam", regularizer="l2", lam=1e-2),
        small_config(1, name="sgd", regularizer="wd", lam=1e-2)]


def states_equal(a, b) -> bool:
    return all(torch.equal(va, vb) for va, vb in zip(a.model.state_dict().values(), b.model.state_dict().values()))


@pytest.mark.slow
@pytest.mark.parametrize("at_step", [4, 12])  # 12: the last step of the run
def test_ctrl_c_saves_a_checkpoint_that_resumes_bit_identical(tmp_path, at_step):
    data, device = tiny_data(), torch.device("cpu")
    reference = train_models(RUNS, data, device)
    path = tmp_path / "partial.pt"

    def interrupt(step, total):
        if step == at_step:
            os.kill(os.getpid(), signal.SIGINT)

    # No timed checkpoint can happen (every 1e9 s): only the interruption writes one.
    with pytest.raises(KeyboardInterrupt):
        train_models(RUNS, data, device, on_step=interrupt, checkpoint=path, checkpoint_every_s=1e9)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    assert saved["step"] == at_step
    resumed = train_models(RUNS, data, device, checkpoint=path, checkpoint_every_s=1e9)
    for got, ref in zip(resumed, reference):
        assert states_equal(got, ref)
        assert got.history == ref.history


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("content", ["not a dict", "code", "other runs", "garbage"])
def test_a_foreign_checkpoint_is_refused_named_and_moved_aside(tmp_path, monkeypatch, caplog, content):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "partial.pt"
    if content == "not a dict":
        torch.save([1, 2, 3], path)
    elif content == "code":
        with open(path, "wb") as f:
            pickle.dump(RunsCode(), f)
    elif content == "other runs":
        torch.save({"format": 2, "configs": ["{}"]}, path)
    else:
        path.write_bytes(b"\x00" * 100)
    with caplog.at_level(logging.WARNING, logger="claimbench.train.checkpoint"):
        assert load_checkpoint(path, RUNS) is None
    assert not (tmp_path / "PWNED").exists()  # never unpickled
    assert not path.exists()
    moved = list(tmp_path.glob("partial.pt.bad-*"))
    assert len(moved) == 1
    assert str(path) in caplog.text and str(moved[0]) in caplog.text


@pytest.mark.slow
def test_a_full_disk_while_checkpointing_removes_the_partial_file_and_training_goes_on(tmp_path, monkeypatch, caplog):
    """ENOSPC halfway through a checkpoint: no partial file is left, the message says what
    happened, and the run still ends as an uninterrupted one (the checkpoint is insurance)."""
    import errno

    data, device = tiny_data(), torch.device("cpu")
    reference = train_models(RUNS, data, device)
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # some bytes reach the file first
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    path = tmp_path / "partial" / "group.pt"
    with caplog.at_level(logging.WARNING, logger="claimbench.train.checkpoint"):
        outcomes = train_models(RUNS, data, device, checkpoint=path, checkpoint_every_s=0.0)
    assert not path.exists() and list(path.parent.iterdir()) == []
    assert "No space left on device" in caplog.text and "partial file was removed" in caplog.text
    for got, ref in zip(outcomes, reference):
        assert states_equal(got, ref)


def test_a_checkpoint_folder_that_cannot_be_made_is_a_warning_not_a_crash(tmp_path, caplog):
    """A file where the checkpoint's folder should be: the save fails, says so, and returns False
    (removing the partial file fails too, there being no folder to hold one)."""
    blocker = tmp_path / "runs"
    blocker.write_text("a file, not a folder")
    with caplog.at_level(logging.WARNING, logger="claimbench.train.checkpoint"):
        assert save_checkpoint(blocker / "group.pt", {"step": 1}) is False
    assert "could not save the checkpoint" in caplog.text and "there is none yet" in caplog.text
    assert blocker.read_text() == "a file, not a folder"
