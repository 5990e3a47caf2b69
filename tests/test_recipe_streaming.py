"""A recipe's chain against its models' reference implementations, run one after the other.

The catalogue's permissive karaoke recipe (``karaoke-5hp``) is Kim's Mel-Band RoFormer, then
UVR's 5_HP-Karaoke VR model on its vocals. What a user compares it with is the chain run file by
file: MSST's inference over the whole song, its vocals written out, then UVR's (audio-separator's)
VR inference over that whole file, which divides by the vocals' loudest bin. Here the two are a
tiny random Mel-Band RoFormer from Kim's published config (``msst_support``) and a tiny random
v5.1 VR network on UVR's ``4band_v3`` layout (``vr_reference``), both in fp32.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from msst.utils.model_utils import demix
from msst.utils.settings import get_model_from_config

from demixer.engine import Separator
from demixer.models.cascade import MIX, GraphBackend, Step
from demixer.models.msst.user import open_files
from demixer.models.registry import get_spec
from demixer.models.vr import StreamingVrBackend
from msst_support import music, randomise, shrunk, write_config
from vr_reference import UvrVr, demixer_vr, layout_file, randomised, reference_network

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RATE = 44100
STEMS = ("lead_vocals", "backing_vocals", "instrumental")


def test_a_karaoke_chain_gives_mssts_vocals_then_uvrs_lead_for_the_whole_song(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two seconds, the last half-second ten times louder, through windows of one second (the
    recipe's shared windows, shrunk as the song is: 2 minutes for a song of 5): the RoFormer's
    vocals are MSST's for the whole song (its 0.4-s chunks run from the song's start, not each
    window's), and the VR model's lead is UVR's for those whole vocals (scaled by their loudest
    bin, which the last half-second holds), not each window's by its own."""
    config, arch = shrunk("kim-mel-vocals", chunk_frames=40)
    ours = write_config(config, tmp_path / "kim.yaml")
    reference, reference_config = get_model_from_config(arch, str(ours))
    randomise(reference, seed=4)
    torch.save(reference.state_dict(), tmp_path / "kim.ckpt")
    monkeypatch.setenv("DEMIXER_PRECISION", "fp32")
    _, roformer = open_files(arch, ours, tmp_path / "kim.ckpt")

    uvr_network = randomised(reference_network(672, "v5.1", nout=16, nout_lstm=32), seed=5)
    params = {"vr_model_param": "4band_v3", "primary_stem": "Vocals", "window_size": 320}
    vr = demixer_vr(uvr_network, 672, params, stems=("lead", "rest"))
    assert isinstance(vr, StreamingVrBackend)
    vr.chunk = 30  # frames: the vocals stream through in 0.33-s chunks
    graph = GraphBackend(
        [
            Step(roformer, MIX, {"vocals": "vocals"}, "instrumental", label="kim"),
            Step(vr, "vocals", {"lead": "lead_vocals"}, "backing_vocals", label="5hp"),
        ],
        STEMS,
    )
    graph.window, graph.overlap = RATE, RATE // 8
    separator = Separator.from_backend(replace(get_spec("karaoke-5hp"), stems=STEMS), graph)

    mix = music(2 * RATE, seed=9)
    mix[:, 3 * RATE // 2 :] *= 10
    with torch.inference_mode():
        vocals = demix(reference_config, reference, mix, "cpu", arch)["vocals"]
    sf.write(tmp_path / "vocals.wav", vocals.T, RATE, subtype="FLOAT")
    uvr = UvrVr(uvr_network, layout_file("4band_v3"), "Vocals", v51=True, window_size=320)
    lead = np.zeros_like(mix)
    primary = uvr.separate(tmp_path / "vocals.wav")[0]
    lead[:, : primary.shape[1]] = primary  # past UVR's last hop: silence, as UVR writes none

    got = separator.separate_array(mix, RATE)
    assert list(got) == list(STEMS)
    assert float(np.abs(lead).max()) > 1e-2
    np.testing.assert_allclose(got["instrumental"], mix - vocals, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["lead_vocals"], lead, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["backing_vocals"], vocals - lead, atol=1e-4, rtol=0)
