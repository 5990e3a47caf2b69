"""The catalogue's promises, checked offline: every entry is complete, pinned, attributed and
documented, and the licence statements are the ones their authors made.

Nothing here downloads; URLs and digests are checked for form and consistency, and the cards
and README for the facts the registry holds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import audio_separator
import pytest

from demixer.errors import UnknownModel
from demixer.models.registry import (
    LICENSE_CLASSES,
    RESTRICTIVE_CLASSES,
    ModelSpec,
    get_spec,
    list_specs,
    model_card,
)
from demixer.models.vr.params import LAYOUTS as VR_LAYOUTS

README = Path(__file__).resolve().parent.parent / "README.md"
MSST_ARCHS = {
    "bs_roformer",
    "mel_band_roformer",
    "mdx23c",
    "scnet",
    "bandit",
    "bandit_v2",
    "apollo",
}
CATALOGUE = [spec for spec in list_specs() if spec.arch is not None]
SHA256 = re.compile(r"[0-9a-f]{64}")
DEMUCS_327 = (
    '"The model weights are not covered by the MIT license, and are provided only for '
    'scientific purposes."'
)


def test_the_issue_asks_for_these_kinds_of_model() -> None:
    by_arch = {spec.arch for spec in CATALOGUE}
    assert {"bs_roformer", "mel_band_roformer", "mdx23c", "scnet", "mdx_net", "vr"} <= by_arch
    ids = {spec.id for spec in CATALOGUE}
    assert {
        "mel-roformer-vocals-kim",
        "bs-roformer-vocals-1297",
        "mel-roformer-inst-becruily",
        "scnet-xl-ihf",
        "mel-roformer-karaoke-becruily",
        "mel-roformer-dereverb-anvuew",
        "mel-roformer-denoise-aufr33",
        "mdx23c-instvoc-hq",
        "mdx-net-vocals-kim-2",
        "mdx-net-inst-hq-3",
    } <= ids
    assert get_spec("scnet-xl-ihf").stems == ("drums", "bass", "other", "vocals")


@pytest.mark.parametrize("spec", CATALOGUE, ids=lambda spec: spec.id)
def test_every_catalogue_entry_is_complete_and_pinned(spec: ModelSpec) -> None:
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", spec.id)  # kebab-case, typed by users
    # Bandit v2 was trained on 48 kHz films (its config's audio.sample_rate); the rest at 44.1.
    rate = 48000 if spec.id == "bandit-v2-dnr" else 44100
    assert spec.sample_rate == rate and spec.stems and len(set(spec.stems)) == len(spec.stems)
    assert spec.license and spec.license_class in LICENSE_CLASSES
    assert spec.source_url.startswith("https://")
    assert spec.pin_sources
    assert f"demixer models pull {spec.id}" in spec.install_hint
    for weight in spec.weights:
        assert SHA256.fullmatch(weight.sha256), weight.name
        assert weight.size is not None and weight.size > 0
        assert weight.url is not None and weight.url.startswith("https://")
        name = weight.url.rsplit("/", 1)[1].split("?")[0]
        assert name.endswith((".ckpt", ".chpt", ".bin", ".yaml", ".onnx", ".pth"))
    for score in spec.scores:
        assert score.metric and score.test_set and score.source.startswith("https://")
    if spec.arch in MSST_ARCHS:
        assert spec.loader == "demixer.models.msst:load"
        names = [w.name for w in spec.weights]
        assert len(names) == 2 and spec.config_name in names
        assert spec.config_name is not None and spec.config_name.endswith(".yaml")
    elif spec.arch == "vr":
        assert spec.loader == "demixer.models.vr:load" and len(spec.weights) == 1
        assert set(spec.arch_params) == {"vr_model_param", "primary_stem"}
        assert spec.arch_params["vr_model_param"] in VR_LAYOUTS and len(spec.stems) == 2
    else:
        assert spec.arch == "mdx_net" and spec.loader == "demixer.models.mdx_net:load"
        assert set(spec.arch_params) == {"n_fft", "dim_f", "dim_t", "compensate", "primary_stem"}
        assert spec.arch_params["primary_stem"] == spec.stems[0]
        assert spec.arch_params["dim_f"] <= spec.arch_params["n_fft"] // 2


def test_no_file_is_pinned_twice_under_different_digests() -> None:
    seen: dict[str, str] = {}
    for spec in list_specs():
        for weight in spec.weights:
            if weight.url is not None:
                assert seen.setdefault(weight.url, weight.sha256) == weight.sha256


@pytest.mark.parametrize("spec", list_specs(), ids=lambda spec: spec.id)
def test_every_model_has_a_card_that_states_its_facts(spec: ModelSpec) -> None:
    card = model_card(spec.id)
    assert card.startswith(f"# {spec.id}\n")
    flat = " ".join(card.split())
    for weight in spec.weights:  # every file's pin, whole: `models info` says "files and pins"
        assert weight.sha256 in card and f"{weight.size:,}" in card, weight.name
        assert weight.url is None or weight.url in card, weight.name
    if spec.arch is not None:
        assert spec.license in flat
        assert f"**{spec.license_class}**" in card
        for score in spec.scores:
            assert f"{score.value:.2f}" in card and score.test_set in card
        assert "not measured by demixer" in card
    if spec.license_class in RESTRICTIVE_CLASSES:
        assert spec.license_class in card


@pytest.mark.parametrize(
    "spec", [s for s in list_specs() if any(w.url for w in s.weights)], ids=lambda s: s.id
)
def test_a_card_on_an_80_column_terminal_shows_every_pin_whole(spec: ModelSpec) -> None:
    """`models info` in a terminal folds a SHA-256 or a file name that does not fit its table
    cell onto the next line instead of cutting it off: a pin is only useful whole."""
    import io

    from rich.console import Console

    from demixer.cli_models import print_card

    buffer = io.StringIO()
    console = Console(file=buffer, width=80, force_terminal=True, color_system=None)
    print_card(model_card(spec.id), console)
    lines = buffer.getvalue().splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.split()[-1:] == ["SHA-256"]) :]
    # the SHA-256 column is each table line's last word: folded, its pieces follow each other
    column = "".join(line.split()[-1] for line in table if line.strip())
    for weight in spec.weights:
        assert weight.sha256 in column, (weight.name, column)


def test_demucs_weights_are_research_only_as_meta_said() -> None:
    for spec in list_specs():
        if spec.loader == "demixer.models.demucs_backend:load":
            assert spec.license_class == "research only"
            assert DEMUCS_327 in spec.license and "#327" in spec.license
            card = " ".join(model_card(spec.id).split())
            assert DEMUCS_327 in card and "facebookresearch/demucs/issues/327" in card
            assert "MIT licence)" not in card


def test_gpl_weights_are_classed_copyleft_not_permissive() -> None:
    """anvuew's GPL-3.0 de-reverb weights (and the dry-vocals recipe built on them) were
    classed `permissive`, their card saying that meant commercial use is allowed: true, but
    silent on what GPL-3.0 asks of anyone who passes the weights on, which MIT does not."""
    gpl = [spec for spec in list_specs() if "GPL" in spec.license]
    assert [spec.id for spec in gpl] == ["mel-roformer-dereverb-anvuew"]
    assert gpl[0].license.startswith("GPL-3.0 ")  # as the author states it
    assert {
        spec.id: spec.license_class
        for spec in list_specs()
        if spec.id in {"mel-roformer-dereverb-anvuew", "dry-vocals", "mel-roformer-vocals-kim"}
    } == {
        "mel-roformer-dereverb-anvuew": "copyleft",
        "dry-vocals": "copyleft",
        "mel-roformer-vocals-kim": "permissive",
    }


def test_htdemucs_ft_quotes_meta_figure_for_the_released_bag() -> None:
    """Meta's README gives the released fine-tuned bag 9.0 dB; 9.2 dB is its paper's sparse
    model, which Meta did not release: `models list` must not show it as htdemucs_ft's."""
    spec = get_spec("htdemucs_ft")
    assert "9.0 dB" in spec.quality and "9.2" not in spec.quality
    card = " ".join(model_card("htdemucs_ft").split())
    assert '"HT Demucs f.t. (v4)" 9.0 dB' in card and "did not release" in card


def test_the_readme_lists_every_model_with_its_licence_class() -> None:
    readme = README.read_text("utf-8")
    table = readme[readme.index("| id | stems |") :].split("\n\n", 1)[0]
    for spec in list_specs():
        row = next(line for line in table.splitlines() if f"`{spec.id}`" in line)
        assert spec.license_class in row, spec.id
    assert DEMUCS_327 in " ".join(readme.split())
    assert "checkpoints (Meta, MIT)" not in readme


def test_audio_separator_figures_are_its_own_medians_over_its_own_track_count() -> None:
    """A card's python-audio-separator row is checked against the very file it cites
    (models-scores.json, the same in the installed 0.47.1): the figure is its median, to two
    decimals, and the test set names as many tracks as that median was taken over."""
    from demixer.models.catalogue.sources import SEPARATOR_SCORES

    package = Path(audio_separator.__file__).parent
    scores = json.loads((package / "models-scores.json").read_text("utf-8"))
    checked = 0
    for spec in list_specs():
        for score in spec.scores:
            if score.source != SEPARATOR_SCORES:
                continue
            entry = next(scores[name] for name in spec.aliases if name in scores)
            tracks = [t for t in entry["track_scores"] if score.stem in t["scores"]]
            assert round(entry["median_scores"][score.stem]["SDR"], 2) == score.value, spec.id
            assert score.test_set.startswith(f"{len(tracks)} MUSDB18 "), (spec.id, score.stem)
            figure = f"{score.value:.2f} dB median SDR"  # the one-line quality `models list` shows
            if figure in spec.quality:
                assert f"{figure}, {len(tracks)} MUSDB18 tracks" in spec.quality, spec.id
            checked += 1
    assert checked >= 10


# Records that, read at the commit cited, do not hold what an entry's pins would cite them for:
# jams' PROVENANCE.md records the SCNet files only (nothing of viperx's checkpoint), and
# melband-roformer-infer's list names Sucial's own v2 file only from commit cae90e4 on.
NOT_A_RECORD_OF = {
    "bs-roformer-vocals-1297": ("jhurliman/jams",),
    "mel-roformer-deecho-sucial": ("f771bc32a562863913ea785213b2bdeea366a775",),
}


@pytest.mark.parametrize("spec", CATALOGUE, ids=lambda spec: spec.id)
def test_a_card_cites_for_its_pins_exactly_the_records_the_catalogue_does(spec: ModelSpec) -> None:
    """`models info` shows the card: its list of where the pins come from is the entry's own,
    so a citation dropped from the catalogue cannot live on in what users read."""
    card = model_card(spec.id)
    section = card.split("### Where the pins come from", 1)[1].split("\n## ", 1)[0]
    cited = [line[2:] for line in section.splitlines() if line.startswith("- ")]
    assert sorted(cited) == sorted(spec.pin_sources)
    for record in NOT_A_RECORD_OF.get(spec.id, ()):
        assert record not in card and not any(record in pin for pin in spec.pin_sources)


def test_stem_names_are_lowercase_so_one_request_reaches_every_model() -> None:
    """UVR and some configs write `Vocals`; a user types `--stems vocals` for every model."""
    from demixer.engine import plan_stems

    vocal_models = [spec for spec in list_specs() if "vocals" in spec.stems]
    assert {"mdx23c-instvoc-hq", "mdx-net-inst-hq-3", "mel-roformer-inst-becruily"} <= {
        spec.id for spec in vocal_models
    }
    for spec in vocal_models:
        assert plan_stems(spec.id, spec.stems, ["vocals"]).targets == ("vocals",)
    with pytest.raises(ValueError, match="stem names are lowercase"):
        ModelSpec(
            id="x", stems=("Vocals", "other"), sample_rate=44100, description="", license="",
            weights_source="", loader="", quality="", install_hint="",
        )  # fmt: skip


# python-audio-separator 0.47.1's model names (its `-m`), and the catalogue model each is.
SEPARATOR_NAMES = {
    "htdemucs.yaml": "htdemucs",
    "htdemucs_ft.yaml": "htdemucs_ft",
    "htdemucs_6s.yaml": "htdemucs_6s",
    "hdemucs_mmi.yaml": "hdemucs_mmi",
    "vocals_mel_band_roformer.ckpt": "mel-roformer-vocals-kim",
    "model_bs_roformer_ep_317_sdr_12.9755.ckpt": "bs-roformer-vocals-1297",
    "mel_band_roformer_instrumental_becruily.ckpt": "mel-roformer-inst-becruily",
    "mel_band_roformer_karaoke_becruily.ckpt": "mel-roformer-karaoke-becruily",
    "mel_band_roformer_vocals_becruily.ckpt": "mel-roformer-vocals-becruily",
    "aspiration_mel_band_roformer_sdr_18.9845.ckpt": "mel-roformer-aspiration-sucial",
    "mel_band_roformer_karaoke_aufr33_viperx_sdr_10.1956.ckpt": "mel-roformer-karaoke-aufr33",
    "bs_roformer_karaoke_frazer_becruily.ckpt": "bs-roformer-karaoke-frazer",
    "dereverb_mel_band_roformer_anvuew_sdr_19.1729.ckpt": "mel-roformer-dereverb-anvuew",
    "denoise_mel_band_roformer_aufr33_sdr_27.9959.ckpt": "mel-roformer-denoise-aufr33",
    "dereverb-echo_mel_band_roformer_sdr_13.4843_v2.ckpt": "mel-roformer-deecho-sucial",
    "MDX23C-8KFFT-InstVoc_HQ.ckpt": "mdx23c-instvoc-hq",
    "MDX23C-DrumSep-aufr33-jarredou.ckpt": "mdx23c-drumsep",
    "bs_roformer_male_female_by_aufr33_sdr_7.2889.ckpt": "bs-roformer-male-female",
    "Kim_Vocal_2.onnx": "mdx-net-vocals-kim-2",
    "UVR-MDX-NET-Inst_HQ_4.onnx": "mdx-net-inst-hq-4",
    "UVR-MDX-NET-Inst_HQ_3.onnx": "mdx-net-inst-hq-3",
    "UVR-DeEcho-DeReverb.pth": "vr-deecho-dereverb",
    "UVR-De-Echo-Normal.pth": "vr-de-echo-normal",
    "UVR-De-Echo-Aggressive.pth": "vr-de-echo-aggressive",
    "5_HP-Karaoke-UVR.pth": "vr-karaoke-5hp",
    "6_HP-Karaoke-UVR.pth": "vr-karaoke-6hp",
    "UVR-DeNoise-Lite.pth": "vr-denoise-lite",
    "UVR-DeNoise.pth": "vr-denoise",
}


def _separator_model_names() -> set[str]:
    """Every model file name in audio-separator's own package data."""
    package = Path(audio_separator.__file__).parent
    names = set(json.loads((package / "models-scores.json").read_text("utf-8")))
    for group in json.loads((package / "models.json").read_text("utf-8")).values():
        for files in group.values():
            names |= set(files) if isinstance(files, dict) else {files}
    return names


def test_models_answer_to_the_names_audio_separator_gives_them() -> None:
    assert set(SEPARATOR_NAMES) <= _separator_model_names()  # its spelling, not a guess
    for name, model_id in SEPARATOR_NAMES.items():
        assert get_spec(name).id == model_id
        assert get_spec(name.rpartition(".")[0]).id == model_id  # -m Kim_Vocal_2
        assert name in get_spec(model_id).aliases
    # SCNet's, BandIt Plus' and the 4-stem BS-RoFormer's are MSST's release file names
    # (audio-separator has none of them),
    # Bandit v2's UVR's (audio-separator has no Bandit), the BVE model's UVR's release file
    # (audio-separator lists the other BVE file, -2).
    assert get_spec("model_scnet_ep_36_sdr_10.0891.ckpt").id == "scnet-xl-ihf"
    assert get_spec("checkpoint-multi_fixed").id == "bandit-v2-dnr"
    assert get_spec("model_bandit_plus_dnr_sdr_11.47").id == "bandit-plus-dnr"
    aliases = [alias for spec in list_specs() for alias in spec.aliases]
    others = [
        "model_scnet_ep_36_sdr_10.0891.ckpt",
        "checkpoint-multi_fixed.ckpt",
        "model_bandit_plus_dnr_sdr_11.47.chpt",
        "model_bs_roformer_ep_17_sdr_9.6568.ckpt",
        "UVR-BVE-4B_SN-44100-1.pth",
    ]
    assert sorted(aliases) == sorted([*SEPARATOR_NAMES, *others])
    with pytest.raises(UnknownModel, match=r"unknown model 'Kim_Vocal_2\.pth'"):
        get_spec("Kim_Vocal_2.pth")
