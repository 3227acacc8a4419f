"""The Switchboard recipe's configs (paper Tables 1-2) and its log-reading helper."""

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from espnet_allinone.encoders.conformer import AllInOneConformerEncoder

RECIPE = Path(__file__).resolve().parents[1] / "egs2/swbd_allinone/asr1"
TUNING = RECIPE / "conf/tuning"


def _load(name):
    return yaml.safe_load((TUNING / f"train_asr_{name}.yaml").read_text())


def _module(name):
    spec = importlib.util.spec_from_file_location(name, RECIPE / "local" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TABLE2 = ["12-2048-8bit", "12-2048-4bit", "12-1024-8bit", "12-1024-4bit",
          "8-2048-8bit", "8-2048-4bit", "8-1024-8bit", "8-1024-4bit"]
T1_SPACES = {
    "depth": ["12-2048-32bit", "8-2048-32bit"],
    "width": ["12-2048-32bit", "12-1024-32bit"],
    "prec": ["12-2048-8bit", "12-2048-4bit"],
}
# config name -> (subnet space, with KL)
ALLINONE = {
    **{f"allinone_{a}": (space, False) for a, space in T1_SPACES.items()},
    **{f"allinone_{a}_kl": (space, True) for a, space in T1_SPACES.items()},
    "allinone_A": (TABLE2, False),
    "allinone_K": (TABLE2, True),
}


def test_every_recipe_system_has_a_config():
    subnets = _module("subnets")
    systems = (RECIPE / "local/systems.sh").read_text()
    for cfg in sorted(TUNING.glob("train_asr_*.yaml")):
        conf = yaml.safe_load(cfg.read_text())
        assert conf["model_conf"]["ctc_weight"] == 0.2  # lambda of Eq. 1
        assert subnets.main(str(cfg), "model").startswith("valid.acc")
    for name in ["baseline", "depth_kl", "width", "prec_kl", "A", "K", "sep_8-1024-4bit"]:
        assert name in systems


@pytest.mark.parametrize("name", sorted(ALLINONE))
def test_allinone_configs_declare_the_papers_subnets(name):
    space, kl = ALLINONE[name]
    conf = _load(name)
    assert conf["encoder"] == "allinone_conformer" and conf["model"] == "allinone"
    assert conf["model_conf"]["use_kl"] is kl
    assert conf["model_conf"]["lambda_preset"] == "conformer"  # footnote 4
    assert _module("subnets").main(str(TUNING / f"train_asr_{name}.yaml"), "subnets").split() == space
    # Table 2: 3 subnets per step; DDP then has to tolerate unused parameters
    sandwich = conf["model_conf"]["subnet_sampling"] == "sandwich"
    assert sandwich == (len(space) == 8)
    assert conf.get("unused_parameters", False) == sandwich


def test_a_and_k_differ_only_in_kl():
    a, k = _load("allinone_A"), _load("allinone_K")
    a["model_conf"]["use_kl"] = True
    assert a == k


@pytest.mark.parametrize("subnet", ["8-1024-4bit", "12-1024-8bit", "8-2048-32bit", "12-1024-32bit"])
def test_separate_systems_match_the_allinone_subnet(subnet):
    """A separate twin computes with the same number of encoder parameters as the
    all-in-one subnet of its name (paper's '#Parameters' column)."""
    conf = _load(f"separate_{subnet}")
    depth, width, bits = subnet.split("-")
    enc = conf["encoder_conf"]
    assert (enc["num_blocks"], enc["linear_units"]) == (int(depth), int(width))
    base = _load("conformer_baseline")
    for key in ("optim_conf", "scheduler_conf", "specaug_conf", "decoder_conf", "batch_bins", "max_epoch"):
        assert conf[key] == base[key], key  # the baseline's schedule
    if bits == "32bit":
        assert conf["encoder"] == "conformer"
        return
    assert enc["subnets"] == [subnet]
    separate = AllInOneConformerEncoder(80, **enc)
    shared = AllInOneConformerEncoder(80, **_load("allinone_K")["encoder_conf"])
    assert separate.subnet_size(None) == shared.subnet_size(subnet)


def test_decode_config_per_subnet():
    base = yaml.safe_load((RECIPE / "conf/decode_asr.yaml").read_text())
    names = {s for space, _ in ALLINONE.values() for s in space}
    for name in names:
        conf = yaml.safe_load((RECIPE / f"conf/decode/decode_asr_{name}.yaml").read_text())
        assert conf == {**base, "subnet": name}


def test_train_times_from_espnet_logs(tmp_path):
    tt = _module("train_times")
    line = ("{e}epoch results: [train] iter_time=0.1, train_time=0.5, time=1 hour and 2 seconds, "
            "total_count=9, [valid] loss=1.0, time=30 seconds, total_count=2\n")
    for exp, epochs in [("asr_K", [1, 2]), ("asr_sep_8-1024-4bit", [1]), ("asr_baseline", [])]:
        (tmp_path / exp).mkdir()
        (tmp_path / exp / "train.log").write_text("".join(line.format(e=e) for e in epochs))
    # a resumed run's rotated log (ESPnet's launcher: train.1.log) repeats epoch 2: counted once
    (tmp_path / "asr_K" / "train.1.log").write_text(line.format(e=2))
    times = tt.main(str(tmp_path))
    assert times == {"K": 2 * 3632.0, "8-1024-4bit": 3632.0}
    json.dumps(times)
