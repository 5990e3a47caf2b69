"""The model directory's own upkeep around ``models add`` and ``remove`` (no network is checked
here: the files' fit is ``test_msst_models.py``'s and ``test_mdx_net.py``'s)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from demixer.errors import NotFound
from demixer.models import user_models
from demixer.models.user_models import Checked, install_user_model, remove_user_model


def _fits(config: Path, checkpoint: Path) -> Checked:
    return Checked(arch="bs_roformer", stems=("vocals",), sample_rate=44100)


def _files(tmp_path: Path) -> tuple[Path, Path]:
    config, checkpoint = tmp_path / "c.yaml", tmp_path / "m.ckpt"
    config.write_text("audio: {}\n")
    checkpoint.write_bytes(os.urandom(1 << 16))
    return config, checkpoint


# An `add` that stops in the middle of its work (as a big checkpoint's copy takes minutes).
_STALLED_ADD = """
import sys, time
from pathlib import Path
from demixer.models.user_models import install_user_model

def check(config, checkpoint):
    Path(sys.argv[2]).write_text("copied")
    time.sleep(60)

models, ready, config, checkpoint = map(Path, sys.argv[1:])
install_user_model("big", config=config, checkpoint=checkpoint, check=check, model_dir=models)
"""


def test_a_killed_add_leaves_no_partial_copy_once_the_next_add_or_remove_runs(
    tmp_path: Path,
) -> None:
    """`models add` killed with kill -9 mid-copy (or a power cut) left its hidden staging
    folder `.NAME.<hex>`, with a partial checkpoint copy, in the model directory for good: never
    listed, never deleted. The next add or remove deletes it, but never a running add's folder,
    nor a folder that is not demixer's."""
    models = tmp_path / "models"
    config, checkpoint = _files(tmp_path)
    install_user_model("mine", config=config, checkpoint=checkpoint, check=_fits, model_dir=models)
    foreign = [models / ".mine.notours", models / ".cache", models / ".big.0123456789abcdef"]
    for folder in foreign:  # the last is named like a staging folder but holds no lock file
        folder.mkdir()
        (folder / "keep").write_text("the user's")
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    stalled = subprocess.Popen(
        [sys.executable, "-c", _STALLED_ADD, str(models), str(ready), str(config), str(checkpoint)],
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert stalled.poll() is None and time.monotonic() < deadline, "the add did not start"
            time.sleep(0.02)
        hidden = {p.name for p in models.iterdir()} - {"mine"} - {p.name for p in foreign}
        assert len(hidden) == 1  # the running add's staging folder
        staging = models / hidden.pop()

        # An add (and a remove) while it runs leaves its folder alone.
        install_user_model("other", config=config, checkpoint=checkpoint, check=_fits,
                           model_dir=models)  # fmt: skip
        remove_user_model("other", models)
        assert (staging / "model.ckpt").is_file()

        stalled.send_signal(signal.SIGKILL)
        stalled.wait(timeout=30)
        assert (staging / "model.ckpt").is_file()  # what the kill leaves
        remove_user_model("mine", models)
    finally:
        if stalled.poll() is None:
            stalled.kill()
            stalled.wait()
    assert sorted(p.name for p in models.iterdir()) == sorted(p.name for p in foreign)
    assert all((folder / "keep").read_text() == "the user's" for folder in foreign)


def test_a_remove_killed_while_deleting_leaves_nothing_once_the_next_add_runs(
    tmp_path: Path,
) -> None:
    """A remove renames the model's folder to `.NAME.removed.<pid>` and then deletes it: killed
    in between, that folder (the whole model) stayed hidden in the model directory."""
    models = tmp_path / "models"
    config, checkpoint = _files(tmp_path)
    install_user_model("mine", config=config, checkpoint=checkpoint, check=_fits, model_dir=models)
    os.rename(models / "mine", models / ".mine.removed.4242")  # as the killed remove left it
    install_user_model("next", config=config, checkpoint=checkpoint, check=_fits, model_dir=models)
    assert os.listdir(models) == ["next"]


def test_two_removes_of_one_name_at_once_say_not_found_for_the_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `models remove mine` at once: the one that came second said INVALID_MODEL_DIR "No
    such file or directory" (exit 2), blaming the model directory; the name is gone, so it is
    NOT_FOUND (exit 1), as a remove of an unknown name says."""
    models = tmp_path / "models"
    config, checkpoint = _files(tmp_path)
    install_user_model("mine", config=config, checkpoint=checkpoint, check=_fits, model_dir=models)
    found = user_models.user_spec

    def found_then_the_other_remove_wins(name: str, model_dir: Path | None = None) -> object:
        spec = found(name, model_dir)
        shutil.rmtree(models / name)  # the other remove, finishing between check and rename
        return spec

    monkeypatch.setattr(user_models, "user_spec", found_then_the_other_remove_wins)
    with pytest.raises(NotFound) as lost:
        remove_user_model("mine", models)
    assert lost.value.code == "NOT_FOUND"
    assert lost.value.message == f"no user model 'mine' in {models}"
    assert os.listdir(models) == []
