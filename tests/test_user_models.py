"""The model directory's own upkeep around ``models add`` and ``remove`` (no network is checked
here: the files' fit is ``test_msst_models.py``'s and ``test_mdx_net.py``'s)."""

from __future__ import annotations

import os
import shutil
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
