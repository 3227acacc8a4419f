"""The plugin inside stock ESPnet processes, as asr.sh starts them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile
import yaml

from tests.conftest import ASR_TRAIN_DATA_ARGS, TRAIN_CONFIG, write_tone_corpus

pytestmark = pytest.mark.slow

PY = sys.executable


def run(args, cwd, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_registration_is_lazy_and_automatic(tmp_path):
    code = (
        "import sys\n"
        "assert 'torch' not in sys.modules, 'plugin imported torch at start-up'\n"
        "import espnet2.tasks.asr as asr\n"
        "print(asr.encoder_choices.get_class('allinone_conformer').__name__,"
        " asr.model_choices.get_class('allinone').__name__)\n"
    )
    out = run([PY, "-c", code], cwd=tmp_path).stdout.split()
    assert out[-2:] == ["AllInOneConformerEncoder", "AllInOneASRModel"]


@pytest.mark.parametrize(
    "module", ["espnet2.bin.asr_inference", "espnet_allinone.bin.asr_inference"]
)
def test_inference_cli_has_subnet_option(tmp_path, module):
    out = run([PY, "-m", module, "--help"], cwd=tmp_path).stdout
    assert "--subnet" in out and "DEPTH-WIDTH-BITSbit" in out
    assert "--ctc_greedy" in out


def test_ctc_greedy_tokens_merges_repeats_and_drops_blanks():
    import torch

    from espnet_allinone.inference import ctc_greedy_tokens

    class FakeCTC:
        def argmax(self, enc):  # (1, T, D) -> (1, T): the best token per frame
            return enc.argmax(-1)

    frames = [0, 3, 3, 0, 3, 5, 5, 0, 0, 2]
    enc = torch.nn.functional.one_hot(torch.tensor(frames), 6).float()
    assert ctc_greedy_tokens(FakeCTC(), enc) == [3, 3, 5, 2]
    assert ctc_greedy_tokens(FakeCTC(), enc, blank_id=3) == [0, 0, 5, 0, 2]
    assert ctc_greedy_tokens(FakeCTC(), enc, exclude=[5]) == [3, 3, 2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    write_tone_corpus(d, 6, 2)
    (d / "train.yaml").write_text(yaml.safe_dump(TRAIN_CONFIG))
    proc = run(
        [
            PY, "-m", "espnet2.bin.asr_train", "--config", "train.yaml",
            "--token_type", "char", "--token_list", "tokens.txt", "--use_preprocessor", "true",
            *ASR_TRAIN_DATA_ARGS,
            "--output_dir", "exp", "--ngpu", "0",
        ],
        cwd=d,
        timeout=600,
    )
    (d / "exp" / "train.log").write_text(proc.stderr)  # asr.sh keeps it there
    return d


def test_stock_asr_train_trains_allinone(trained):
    config = yaml.safe_load((trained / "exp" / "config.yaml").read_text())
    assert config["encoder"] == "allinone_conformer" and config["model"] == "allinone"
    assert (trained / "exp" / "1epoch.pth").exists()
    log = (trained / "exp" / "train.log").read_text()
    # validation reports every subnet of the space
    for subnet in ["2-32-32bit", "2-32-4bit", "2-16-32bit", "1-16-4bit"]:
        assert f"acc_{subnet}=" in log, subnet


def _decode(d: Path, subnet: str):
    out = d / f"decode_{subnet}"
    (d / f"decode_{subnet}.yaml").write_text(
        yaml.safe_dump({"beam_size": 2, "ctc_weight": 0.3, "subnet": subnet})
    )
    proc = run(
        [
            PY, "-m", "espnet2.bin.asr_inference", "--config", f"decode_{subnet}.yaml",
            "--asr_train_config", "exp/config.yaml", "--asr_model_file", "exp/1epoch.pth",
            "--data_path_and_name_and_type", "dev/wav.scp,speech,sound",
            "--output_dir", str(out), "--ngpu", "0",
        ],
        cwd=d,
        timeout=300,
    )
    assert f"decoding with subnet {subnet}" in proc.stderr
    text = (out / "1best_recog" / "text").read_text().splitlines()
    score = (out / "1best_recog" / "score").read_text().splitlines()
    assert len(score) == 2 and len(text) <= 2
    return score


def test_stock_asr_inference_decodes_chosen_subnets(trained):
    big = _decode(trained, "2-32-32bit")
    small = _decode(trained, "1-16-4bit")
    # the two subnets really compute differently: beam scores differ
    assert big != small


def test_speech2text_python_api(trained):
    import torch

    from espnet_allinone.inference import Speech2Text

    kwargs = dict(asr_train_config=trained / "exp/config.yaml", asr_model_file=trained / "exp/1epoch.pth", beam_size=1)
    wav, _ = soundfile.read(trained / "dev" / "dev_00.wav")
    s_big = Speech2Text(**kwargs)
    s_small = Speech2Text(**kwargs, subnet="1-16-4bit")
    assert str(s_big.subnet) == "2-32-32bit" and str(s_small.subnet) == "1-16-4bit"
    x = torch.tensor(wav, dtype=torch.float32)[None]
    lens = torch.tensor([x.size(1)])
    with torch.no_grad():
        e_big, _ = s_big.asr_model.encode(x, lens)
        e_small, _ = s_small.asr_model.encode(x, lens)
    assert not torch.allclose(e_big, e_small)
    assert s_small(wav)  # decodes to an n-best list
    with pytest.raises(ValueError, match="valid subnets"):
        Speech2Text(**kwargs, subnet="2-64-4bit")


@pytest.mark.parametrize("subnet", ["2-32-32bit", "1-16-4bit"])
def test_ctc_greedy_decodes_the_subnets_frame_argmax(trained, subnet):
    import torch

    from espnet_allinone.inference import Speech2Text

    kwargs = dict(asr_train_config=trained / "exp/config.yaml", asr_model_file=trained / "exp/1epoch.pth")
    s2t = Speech2Text(**kwargs, subnet=subnet, ctc_greedy=True)
    wav, _ = soundfile.read(trained / "dev" / "dev_00.wav")
    text, token, token_int, hyp = s2t(wav)[0]
    x = torch.tensor(wav, dtype=torch.float32)[None]
    with torch.no_grad():
        enc, _ = s2t.asr_model.encode(x, torch.tensor([x.size(1)]))
        best = s2t.asr_model.ctc.log_softmax(enc)[0].argmax(-1)
    # repeats merged, blanks (0) and <sos/eos> dropped, as ESPnet's intermediate-CTC decoding does
    never = {0, s2t.asr_model.sos, s2t.asr_model.eos}
    expected = [t for t in torch.unique_consecutive(best).tolist() if t not in never]
    assert token_int == expected
    assert token == [s2t.asr_model.token_list[t] for t in expected]
    assert text == "".join(token).replace("<space>", " ")
    # the stock CLI with ctc_greedy in the decode config writes the same hypothesis
    out = trained / f"greedy_{subnet}"
    (trained / f"greedy_{subnet}.yaml").write_text(yaml.safe_dump({"ctc_greedy": True, "subnet": subnet}))
    run([PY, "-m", "espnet2.bin.asr_inference", "--config", f"greedy_{subnet}.yaml",
         "--asr_train_config", "exp/config.yaml", "--asr_model_file", "exp/1epoch.pth",
         "--data_path_and_name_and_type", "dev/wav.scp,speech,sound",
         "--output_dir", str(out), "--ngpu", "0"], cwd=trained, timeout=300)
    line = [ln for ln in (out / "1best_recog/text").read_text().splitlines() if ln.startswith("dev_00")]
    assert (line[0].split(maxsplit=1) + [""])[1] == text.strip()
    # the greedy path, not the beam search, wrote it: only greedy hypotheses score 0.0
    scores = dict(ln.split() for ln in (out / "1best_recog/score").read_text().splitlines())
    assert set(scores.values()) == {"0.0"} and len(scores) == 2
