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


# --- the recipe under ESPnet's asr.sh: helpers, scripts, set-up ---------------------------

CONFORMER_PRESET = RECIPE.parents[2] / "conf/train_asr_allinone_conformer.yaml"


def test_k_config_lives_in_the_recipe_and_is_the_project_preset():
    """No link out of the recipe (it breaks when the recipe dir is copied); the project's
    preset is the recipe's file (one source)."""
    k = TUNING / "train_asr_allinone_K.yaml"
    assert not k.is_symlink()
    assert CONFORMER_PRESET.is_symlink() and CONFORMER_PRESET.resolve() == k.resolve()
    assert not [p for p in RECIPE.rglob("*") if p.is_symlink()
                and not (p.resolve().is_relative_to(RECIPE))]


def _query(config: str, what: str) -> str:
    return _module("subnets").main(str(TUNING / f"train_asr_{config}.yaml"), what)


def test_arch_of_a_config_names_the_baseline(tmp_path):
    """local/results.sh passes `subnets.py <baseline config> arch` as --baseline_name."""
    subnets = _module("subnets")
    assert _query("conformer_baseline", "arch") == "12-2048-32bit"
    assert _query("separate_8-2048-32bit", "arch") == "8-2048-32bit"
    assert _query("allinone_K", "arch") == "12-2048-8bit"
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump({"encoder": "conformer", "encoder_conf": {"num_blocks": 4,
                                     "linear_units": 512}}))
    assert subnets.main(str(small), "arch") == "4-512-32bit"
    small.write_text(yaml.safe_dump({"encoder": "conformer", "encoder_conf": {}}))
    assert subnets.main(str(small), "arch") == "6-2048-32bit"  # ConformerEncoder's defaults
    small.write_text(yaml.safe_dump({"encoder": "rnn", "encoder_conf": {}}))
    with pytest.raises(ValueError, match="rnn"):
        subnets.main(str(small), "arch")


def test_model_to_decode_is_the_criterions_average():
    """asr.sh's default --inference_asr_model valid.acc.ave.pth does not exist for the
    all-in-one configs (best_model_criterion: valid acc_mean max)."""
    assert _query("allinone_K", "model") == "valid.acc_mean.ave.pth"
    assert _query("conformer_baseline", "model") == "valid.acc.ave.pth"
    decode = (RECIPE / "local/decode_subnets.sh").read_text()
    assert '--inference_asr_model "${model}"' in decode


def _sh(cmd, cwd, **env):
    import os
    import subprocess

    return subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env})


def _fake_espnet(root: Path, swbd_files=(), old_swbd_files=()):
    tpl = root / "egs2/TEMPLATE/asr1"
    for d in ("scripts", "pyscripts", "utils", "steps"):
        (tpl / d).mkdir(parents=True, exist_ok=True)
    (tpl / "asr.sh").write_text("#!/bin/sh\n")
    for d, files in (("egs2/swbd/asr1/local", swbd_files), ("egs/swbd/asr1/local", old_swbd_files)):
        (root / d).mkdir(parents=True, exist_ok=True)
        for f in files:
            (root / d / f).write_text("")
    return root


SWBD_FILES = ["swbd1_data_download.sh", "swbd1_prepare_dict.sh", "swbd1_data_prep.sh",
              "swbd1_map_words.pl", "swbd1_fix_speakerid.pl", "format_acronyms_dict.py",
              "MSU_single_letter.txt"]


@pytest.fixture
def recipe_copy(tmp_path):
    import shutil

    dst = tmp_path / "egs2/swbd_allinone/asr1"
    shutil.copytree(RECIPE, dst, ignore=shutil.ignore_patterns("data", "dump", "exp"))
    for f in ("asr.sh", "scripts", "pyscripts", "utils", "steps"):
        if (dst / f).is_symlink():
            (dst / f).unlink()
    return dst


def test_setup_espnet_fails_naming_what_is_missing(tmp_path, recipe_copy):
    # ESPnet keeps dict.patch and map_acronyms_transcripts.py in egs/swbd/asr1/local only
    espnet = _fake_espnet(tmp_path / "espnet", SWBD_FILES)
    out = _sh(f"local/setup_espnet.sh {espnet}", recipe_copy)
    assert out.returncode != 0
    assert "dict.patch" in out.stderr and "map_acronyms_transcripts.py" in out.stderr
    assert "swbd1_data_prep.sh" not in out.stderr
    assert not (recipe_copy / "asr.sh").exists()  # nothing linked
    assert not (recipe_copy / "local/swbd1_data_prep.sh").exists()


def test_setup_espnet_links_from_egs_and_egs2(tmp_path, recipe_copy):
    espnet = _fake_espnet(tmp_path / "espnet", SWBD_FILES,
                          ["dict.patch", "map_acronyms_transcripts.py"])
    out = _sh(f"local/setup_espnet.sh {espnet}", recipe_copy)
    assert out.returncode == 0, out.stderr
    assert (recipe_copy / "local/dict.patch").resolve() == espnet / "egs/swbd/asr1/local/dict.patch"
    assert (recipe_copy / "local/swbd1_data_prep.sh").resolve() == \
        espnet / "egs2/swbd/asr1/local/swbd1_data_prep.sh"
    assert (recipe_copy / "asr.sh").resolve() == espnet / "egs2/TEMPLATE/asr1/asr.sh"
    # path.sh finds the checkout through the asr.sh link and puts its utils/ on PATH
    out = _sh(". ./path.sh && echo ${ESPNET_ROOT} && echo ${PATH}", recipe_copy,
              ESPNET_ROOT="", VIRTUAL_ENV="x")
    root, path = out.stdout.split("\n")[:2]
    assert root == str(espnet)
    assert f"{espnet}/utils" in path.split(":")


def test_setup_espnet_template_only(tmp_path, recipe_copy):
    espnet = _fake_espnet(tmp_path / "espnet")
    out = _sh(f"local/setup_espnet.sh --template_only {espnet}", recipe_copy)
    assert out.returncode == 0, out.stderr
    assert (recipe_copy / "asr.sh").is_symlink()
    assert not (recipe_copy / "local/swbd1_data_prep.sh").exists()


def test_path_sh_activates_espnets_python_and_tools(tmp_path, recipe_copy):
    espnet = _fake_espnet(tmp_path / "espnet")
    (espnet / "tools").mkdir()
    (espnet / "tools/activate_python.sh").write_text("export ACTIVATED=yes\n")
    (espnet / "tools/extra_path.sh").write_text('export PATH="/opt/extra_tools:${PATH}"\n')
    out = _sh(". ./path.sh && echo ${ACTIVATED} && echo ${PATH}", recipe_copy,
              ESPNET_ROOT=str(espnet))
    activated, path = out.stdout.split("\n")[:2]
    assert activated == "yes" and "/opt/extra_tools" in path.split(":")


@pytest.mark.skipif(not Path("/usr/lib/sctk/bin/sclite").exists(), reason="Debian sctk absent")
def test_path_sh_falls_back_to_debians_sctk(tmp_path, recipe_copy):
    out = _sh(". ./path.sh && command -v sclite hubscr.pl", recipe_copy,
              ESPNET_ROOT=str(tmp_path / "none"), PATH="/usr/bin:/bin")
    assert out.stdout.split() == ["/usr/lib/sctk/bin/sclite", "/usr/lib/sctk/bin/hubscr.pl"]


def test_run_sh_passes_lm_train_text_and_skips_local_data():
    """asr.sh fixes lm_train_text's default before it appends _sp to train_set and reads it in
    stage 4 even with --use_lm false: run.sh names the speed-perturbed set itself."""
    run = (RECIPE / "run.sh").read_text()
    assert '--lm_train_text "dump/raw/${train_set}${sp}/text"' in run
    assert '--bpe_train_text "dump/raw/${train_set}${sp}/text"' in run
    assert '"${skip_local_data}" && first=2' in run


def _recipe_scripts():
    root = RECIPE.parents[1]
    for recipe in ("swbd_allinone/asr1", "librispeech_allinone/asr1"):
        for p in sorted((root / recipe).rglob("*.sh")):
            if not p.is_symlink() and "/data/" not in str(p) and "/exp/" not in str(p):
                yield root / recipe, p


@pytest.mark.parametrize("recipe,script", list(_recipe_scripts()),
                         ids=lambda x: x.name if x.suffix else x.parent.parent.name)
def test_recipe_scripts_parse_and_pass_shellcheck(recipe, script):
    import shutil
    import subprocess

    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (Debian package shellcheck)")
    out = subprocess.run(["shellcheck", "-x", "-S", "warning", "-s", "bash",
                          str(script.relative_to(recipe))], cwd=recipe, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout
