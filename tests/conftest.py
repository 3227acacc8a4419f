import random

import pytest
import torch

from espnet2.asr.ctc import CTC
from espnet2.asr.decoder.transformer_decoder import TransformerDecoder

from espnet_allinone.encoders.conformer import AllInOneConformerEncoder
from espnet_allinone.model import AllInOneASRModel

# Tiny shapes shared by the tests.
IDIM = 20
ADIM = 16
UNITS = 32
VOCAB = 10
TINY = dict(
    output_size=ADIM,
    attention_heads=2,
    linear_units=UNITS,
    num_blocks=3,
    rel_pos_type="latest",
    pos_enc_layer_type="rel_pos",
    selfattention_layer_type="rel_selfattn",
    macaron_style=True,
    input_layer="conv2d",
)
GRID = dict(subnet_depths=[2, 3], subnet_widths=[16, 32], subnet_bits=[4, 8])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    random.seed(0)


def make_encoder(grid=GRID, **kw):
    conf = {**TINY, **kw}
    return AllInOneConformerEncoder(IDIM, **grid, **conf)


def make_model(encoder=None, **model_conf):
    encoder = encoder or make_encoder()
    return AllInOneASRModel(
        vocab_size=VOCAB,
        token_list=[f"t{i}" for i in range(VOCAB - 1)] + ["<sos/eos>"],
        frontend=None,
        specaug=None,
        normalize=None,
        preencoder=None,
        encoder=encoder,
        postencoder=None,
        decoder=TransformerDecoder(VOCAB, ADIM, attention_heads=2, linear_units=UNITS, num_blocks=1),
        ctc=CTC(VOCAB, ADIM),
        joint_network=None,
        **{"ctc_weight": 0.3, **model_conf},
    )


def batch(b=2, t=60):
    x = torch.randn(b, t, IDIM)
    xl = torch.tensor([t] + [t - 10] * (b - 1))
    y = torch.randint(1, VOCAB - 1, (b, 5))
    yl = torch.tensor([5] + [3] * (b - 1))
    return x, xl, y, yl
