"""The community catalogue: the public checkpoints people separate with today.

Each entry names its files by a URL pinned to one revision where the host allows it (a Hugging
Face revision, a git commit), with the full SHA-256 and size of every file, where those digests
were found (``pin_sources``), the licence exactly as its authors state it, and the figures its
authors published. Nothing here is guessed: a model whose digest no public source records is left
out (see the model cards and README for what was left out and why).

Conventions (shared with the architecture loaders):

- MSST models (``arch`` = ``bs_roformer``, ``mel_band_roformer``, ``mdx23c``, ``scnet``,
  ``bandit``, ``bandit_v2``, ``apollo``) have two
  files: the YAML config, named by ``config_name``, and the checkpoint; ``stems`` are the
  config's ``training.instruments``, verbatim.
- MDX-Net models (``arch`` = ``mdx_net``) have one ONNX file and their STFT settings in
  ``arch_params`` (see :class:`~demixer.models.spec.ModelSpec`), as UVR's ``model_data.json``
  gives them under the MD5 of the file's last 10 000 KiB (an identity check only, not a pin).
- VR models (``arch`` = ``vr``) have one ``.pth`` and UVR's VR model data in ``arch_params``
  (``vr_model_param``, ``primary_stem``); ``stems`` are the primary's, then its complement's.
"""

from __future__ import annotations

from dataclasses import replace

from demixer.models.catalogue.builtin import BUILTIN
from demixer.models.catalogue.cinematic import CINEMATIC
from demixer.models.catalogue.convnets import OTHERS
from demixer.models.catalogue.recipes import recipes
from demixer.models.catalogue.restoration import RESTORATION
from demixer.models.catalogue.roformer import ROFORMERS
from demixer.models.catalogue.uvr_vr import UVR_VR
from demixer.models.spec import ModelSpec

__all__ = ["BUILTIN", "CATALOGUE", "SHIPPED", "SHIPPED_ALIASES", "SHIPPED_IDS"]

#: The file names the tools users come from know these models by: python-audio-separator
#: 0.47.1's model names (its ``-m``; its ``models-scores.json`` and ``models.json``), which are
#: UVR's and MSST's release file names; SCNet's, BandIt Plus' and the 4-stem BS-RoFormer's are
#: MSST's release files' (audio-separator has none of them), Bandit v2's is UVR's download's
#: (audio-separator has no Bandit); the VR models' are UVR's release file names, which
#: audio-separator uses too (but for the BVE model's: it lists UVR's other BVE file). The same
#: weights in each case: the files are named in the entries' ``weights`` or, for Kim's model,
#: renamed by audio-separator (``MelBandRoformer.ckpt`` on Hugging Face).
_FILE_NAMES: dict[str, tuple[str, ...]] = {
    "htdemucs": ("htdemucs.yaml",),
    "htdemucs_ft": ("htdemucs_ft.yaml",),
    "htdemucs_6s": ("htdemucs_6s.yaml",),
    "hdemucs_mmi": ("hdemucs_mmi.yaml",),
    "mel-roformer-vocals-kim": ("vocals_mel_band_roformer.ckpt",),
    "bs-roformer-vocals-1297": ("model_bs_roformer_ep_317_sdr_12.9755.ckpt",),
    "mel-roformer-inst-becruily": ("mel_band_roformer_instrumental_becruily.ckpt",),
    "mel-roformer-karaoke-becruily": ("mel_band_roformer_karaoke_becruily.ckpt",),
    "mel-roformer-vocals-becruily": ("mel_band_roformer_vocals_becruily.ckpt",),
    "mel-roformer-aspiration-sucial": ("aspiration_mel_band_roformer_sdr_18.9845.ckpt",),
    "mel-roformer-karaoke-aufr33": ("mel_band_roformer_karaoke_aufr33_viperx_sdr_10.1956.ckpt",),
    "bs-roformer-4stems-zfturbo": ("model_bs_roformer_ep_17_sdr_9.6568.ckpt",),
    "bs-roformer-karaoke-frazer": ("bs_roformer_karaoke_frazer_becruily.ckpt",),
    "mel-roformer-dereverb-anvuew": ("dereverb_mel_band_roformer_anvuew_sdr_19.1729.ckpt",),
    "mel-roformer-denoise-aufr33": ("denoise_mel_band_roformer_aufr33_sdr_27.9959.ckpt",),
    "mel-roformer-deecho-sucial": ("dereverb-echo_mel_band_roformer_sdr_13.4843_v2.ckpt",),
    "scnet-xl-ihf": ("model_scnet_ep_36_sdr_10.0891.ckpt",),
    "mdx23c-instvoc-hq": ("MDX23C-8KFFT-InstVoc_HQ.ckpt",),
    "mdx23c-drumsep": ("MDX23C-DrumSep-aufr33-jarredou.ckpt",),
    "bs-roformer-male-female": ("bs_roformer_male_female_by_aufr33_sdr_7.2889.ckpt",),
    "mdx-net-vocals-kim-2": ("Kim_Vocal_2.onnx",),
    "mdx-net-inst-hq-4": ("UVR-MDX-NET-Inst_HQ_4.onnx",),
    "mdx-net-inst-hq-3": ("UVR-MDX-NET-Inst_HQ_3.onnx",),
    "bandit-v2-dnr": ("checkpoint-multi_fixed.ckpt",),
    "bandit-plus-dnr": ("model_bandit_plus_dnr_sdr_11.47.chpt",),
    "vr-deecho-dereverb": ("UVR-DeEcho-DeReverb.pth",),
    "vr-de-echo-normal": ("UVR-De-Echo-Normal.pth",),
    "vr-de-echo-aggressive": ("UVR-De-Echo-Aggressive.pth",),
    "vr-denoise": ("UVR-DeNoise.pth",),
    "vr-denoise-lite": ("UVR-DeNoise-Lite.pth",),
    "vr-karaoke-5hp": ("5_HP-Karaoke-UVR.pth",),
    "vr-karaoke-6hp": ("6_HP-Karaoke-UVR.pth",),
    "vr-bve": ("UVR-BVE-4B_SN-44100-1.pth",),
}


def _named(specs: tuple[ModelSpec, ...]) -> tuple[ModelSpec, ...]:
    return tuple(replace(spec, aliases=_FILE_NAMES.get(spec.id, ())) for spec in specs)


CATALOGUE: tuple[ModelSpec, ...] = _named((*ROFORMERS, *OTHERS, *UVR_VR, *CINEMATIC, *RESTORATION))
_MODELS = (*_named(BUILTIN), *CATALOGUE)
#: Every entry demixer ships, in display order: its own models, the community catalogue, then
#: the recipes chaining them.
SHIPPED: tuple[ModelSpec, ...] = (*_MODELS, *recipes({spec.id: spec for spec in _MODELS}))
SHIPPED_IDS: frozenset[str] = frozenset(spec.id for spec in SHIPPED)
#: Each alias, and each without its extension, -> the id it names.
SHIPPED_ALIASES: dict[str, str] = {
    name: spec.id
    for spec in SHIPPED
    for alias in spec.aliases
    for name in (alias, alias.rpartition(".")[0])
}
