"""The LibriSpeech wav2vec2 recipe's configs (paper Tables 3-4): one place for each setting."""

from pathlib import Path

import pytest
import yaml

from espnet_allinone.subnet import SubnetSpace

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs2/librispeech_allinone/asr1"
TUNING = RECIPE / "conf/tuning"
PRESET = ROOT / "conf/train_asr_allinone_wav2vec2.yaml"


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_no_link_out_of_the_recipe():
    """Links out of the recipe break when the recipe dir is copied."""
    assert not [p for p in RECIPE.rglob("*") if p.is_symlink()
                and not p.resolve().is_relative_to(RECIPE)]


def test_table4_k_is_the_project_preset():
    """The project's wav2vec2 preset is the recipe's Table 4 K config (one source): no init_param
    (run.sh's --pretrained_model) and no tensorboard (ESPnet does not install it, its trainer imports
    it when use_tensorboard is true)."""
    table4_k = TUNING / "train_asr_wav2vec2_table4_K.yaml"
    assert PRESET.is_symlink() and PRESET.resolve() == table4_k.resolve()
    recipe = _load(table4_k)
    assert "init_param" not in recipe and recipe["use_tensorboard"] is False


@pytest.mark.parametrize("config", sorted(p.name for p in TUNING.glob("*.yaml")))
def test_training_configs_run_without_tensorboard(config):
    assert _load(TUNING / config)["use_tensorboard"] is False


@pytest.mark.parametrize("config", sorted(p.name for p in TUNING.glob("*.yaml")))
def test_training_configs_leave_the_ctc_head_to_run_sh(config):
    """run.sh passes the CTC head as asr.sh's --pretrained_model (ESPnet's --init_param);
    naming it in the config too would load it twice from two places to keep in step."""
    assert "init_param" not in _load(TUNING / config)
    assert "--pretrained_model \"${token_dir}/ctc_head.pth\"" in (RECIPE / "run.sh").read_text()


def test_a_and_k_differ_only_in_kl():
    a = _load(TUNING / "train_asr_wav2vec2_table4_A.yaml")
    k = _load(TUNING / "train_asr_wav2vec2_table4_K.yaml")
    assert a["model_conf"].pop("use_kl") is False and k["model_conf"].pop("use_kl") is True
    assert a == k


def test_decode_configs_are_greedy_with_a_beam_option():
    base = _load(RECIPE / "conf/decode_ctc.yaml")
    assert base["ctc_greedy"] is True and base["ctc_weight"] == 1.0 and base["beam_size"] > 1
    names = set()
    for cfg in TUNING.glob("train_asr_wav2vec2_table*.yaml"):
        names |= set(SubnetSpace.from_encoder_conf(_load(cfg)["encoder_conf"]).names)
    for name in names:
        assert _load(RECIPE / f"conf/decode/decode_ctc_{name}.yaml") == {**base, "subnet": name}
    run = (RECIPE / "run.sh").read_text()
    assert 'beam) tag_prefix=decode_ctc_beam; inference_args="--ctc_greedy false' in run
