"""Checkpoints written with ESPnet 202511 under the installed ESPnet (either line).

``tests/data/espnet202511`` was written on the 202511 line by
``tests/data/make_espnet202511_fixture.py``, with the hypotheses 202511 decoded.
"""

import json
import shutil

import pytest
import soundfile
import torch
import yaml

from espnet_allinone import compat
from tests.conftest import FIXTURE_202511

FIXTURE = FIXTURE_202511
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


@pytest.fixture
def allinone(tmp_path):
    d = tmp_path / "allinone"
    shutil.copytree(FIXTURE / "allinone", d)
    conf = yaml.safe_load((d / "config.yaml").read_text())
    conf["normalize_conf"]["stats_file"] = str(d / "feats_stats.npz")
    (d / "config.yaml").write_text(yaml.safe_dump(conf))
    return d / "config.yaml", d / "model.pth"


def _exact_ctc() -> dict:
    """Stock decoding's exact CTC prefix scoring, as 202511 scored (202610+ has a window)."""
    return {"ctc_window_margin": 0} if compat.ctc_window_margin_default() else {}


@pytest.mark.parametrize("decoder", ["greedy", "beam"])
@pytest.mark.parametrize("subnet", sorted(EXPECTED["decode"]))
def test_202511_allinone_checkpoint_decodes_as_202511_did(allinone, subnet, decoder):
    from espnet_allinone.inference import Speech2Text

    config, model = allinone
    kwargs = dict(ctc_greedy=True) if decoder == "greedy" else dict(EXPECTED["beam"], **_exact_ctc())
    s2t = Speech2Text(str(config), str(model), subnet=subnet, device="cpu", **kwargs)
    wav, _ = soundfile.read(FIXTURE / "utt.wav", dtype="float32")
    got = s2t(wav)[0][2]
    expected = EXPECTED["decode"][subnet][decoder]
    assert expected, "the fixture's hypothesis is empty: regenerate it with a model that emits tokens"
    assert got == expected, (
        f"espnet {compat.ESPNET_VERSION}: subnet {subnet} {decoder} decodes {got}, "
        f"espnet {EXPECTED['espnet']} decoded {expected}"
    )


def test_202511_allinone_checkpoint_loads_every_key(allinone):
    """Strict load: the plugin's own subsampling keys (``embed.out.0.weight_log_step.*``,
    ``weight_log_step_ready``) follow ESPnet's layout of the installed line."""
    from espnet2.tasks.asr import ASRTask

    config, model_file = allinone
    model, _ = ASRTask.build_model_from_file(str(config), None, "cpu")
    state = torch.load(model_file, map_location="cpu")
    result = model.load_state_dict(dict(state), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    out = model.encoder.embed.out
    out = out[0] if isinstance(out, torch.nn.Sequential) else out
    old = "encoder.embed.out.0."
    for bits, step in out.weight_log_step.items():
        assert torch.equal(step, state[f"{old}weight_log_step.{bits}"])
    assert torch.equal(out.weight_log_step_ready, state[f"{old}weight_log_step_ready"])
    assert bool(out.weight_log_step_ready.all())
    assert torch.equal(out.weight, state[f"{old}weight"])


def test_202511_stock_conformer_via_init_param_loads_every_key(allinone):
    """``--init_param`` of a stock 202511 Conformer checkpoint into the all-in-one model: its
    largest float subnet computes what the stock encoder computed under 202511 (a randomly
    initialised ``embed.out`` would not)."""
    from espnet2.tasks.asr import ASRTask
    from espnet2.torch_utils.load_pretrained_model import load_pretrained_model

    config, _ = allinone
    torch.manual_seed(5)  # the all-in-one model's own initialisation differs from the checkpoint's
    model, _ = ASRTask.build_model_from_file(str(config), None, "cpu")
    load_pretrained_model(str(FIXTURE / "stock" / "model.pth"), model, ignore_init_mismatch=False, map_location="cpu")
    enc = model.encoder.eval()
    enc.set_subnet(None)  # the largest
    stock = EXPECTED["stock_encoder"]
    g = torch.Generator().manual_seed(stock["features"]["seed"])
    feats = torch.randn(*stock["features"]["shape"], generator=g)
    with torch.no_grad():
        out, _, _ = enc(feats, torch.tensor([feats.size(1)]))
    largest = enc.subnet_space.largest
    assert largest.bits == 32, "the fixture's largest subnet must be float to compare with the stock encoder"
    torch.testing.assert_close(out[0], torch.tensor(stock["output"]), atol=1e-5, rtol=1e-5)
