"""The one size/ratio accounting (``abs_allinone.measure`` + ``compression_ratio``)
applied to the paper's architectures, built locally without weights, against the
"Compression Ratio" columns of its Tables 2 (Conformer) and 4 (wav2vec2-base).

Table 2: every entry matches to the paper's one decimal, except one misprint:
  * 8-1024-8bit is printed 8.2x (Sys. 7, 7A and 7K) but is 9.2x: the paper's own
    8-1024-4bit entry, 18.4x, is twice it, and no counting can make a 4-bit
    subnet more than twice as small as the same subnet at 8 bits.
  * (Sys. 1 and 2 print 8.0x for 12-2048-8bit and 4.0x for 12-2048-4bit, swapped
    with respect to Sys. 1A/1K and 2A/2K; an 8-bit copy of a 32-bit model is at
    most 4x smaller, so the A/K rows are the right ones and are used here.)
  The "#Parameters Encoder" column (34m, 21m, 23m, 15m) matches too.

Table 4: the same counting (every parameter of a quantized Transformer layer at the
subnet's bit-width; CNN feature extractor, feature projection, positional
convolution and encoder LayerNorm at 32 bits) gives 12-2560-8bit exactly (3.34x)
and the other seven 0.006-0.017 above the paper (e.g. 3.09x vs 3.08x for
12-3072-8bit). Counting instead only the layers' Linear weights at the bit-width
(biases and LayerNorms at 32 bits) hits 6 of the 8 wav2vec2 entries exactly and
misses two by 0.01 (3.33x, 4.21x), but it misses Table 2 badly (7.8x instead of
8.0x for 12-2048-4bit, 12.4x instead of 12.8x for 12-1024-4bit): the two tables
count biases and norms differently. This code follows Table 2, whose rule is
unambiguous (all of the Conformer encoder is quantized), and keeps it for wav2vec2
so that every table of this project uses one rule.
"""

import pytest
import torch

from espnet_allinone.elastic import make_elastic
from espnet_allinone.encoders.abs_allinone import SubnetSize, measure
from espnet_allinone.encoders.conformer import AllInOneConformerEncoder
from espnet_allinone.subnet import FULL_PRECISION

# Table 2, Sys. 1K..8K ("Compression Ratio", "#Parameters Encoder" in millions)
TABLE2 = {
    "12-2048-8bit": (4.0, 34),
    "12-2048-4bit": (8.0, 34),
    "12-1024-8bit": (6.4, 21),
    "12-1024-4bit": (12.8, 21),
    "8-2048-8bit": (5.8, 23),
    "8-2048-4bit": (11.7, 23),
    "8-1024-8bit": (8.2, 15),  # misprint: 9.2 (see module docstring)
    "8-1024-4bit": (18.4, 15),
}
# the paper's own value this entry must have: half its 4-bit twin's (8-1024-4bit, 18.4x)
TABLE2_MISPRINTS = {"8-1024-8bit": "8-1024-4bit"}

# Table 4, Sys. 1K..8K ("Comp. Ratio")
TABLE4 = {
    "12-3072-8bit": 3.08,
    "12-3072-6bit": 3.72,
    "12-2560-8bit": 3.34,
    "12-2560-6bit": 4.00,
    "11-3072-8bit": 3.27,
    "11-3072-6bit": 3.93,
    "11-2560-8bit": 3.53,
    "11-2560-6bit": 4.22,
}


@pytest.fixture(scope="module", params=[80, 83], ids=["fbank80", "fbank83+pitch"])
def swbd_conformer(request):
    """The paper's Conformer (ESPnet swbd recipe): 12 blocks, d=256, FFN 2048,
    4 heads, kernel 31, macaron, rel-pos, conv2d subsampling; ESPnet1 fed it 83-dim
    fbank+pitch, ESPnet2 80-dim fbank: both are checked."""
    return AllInOneConformerEncoder(
        request.param,
        output_size=256,
        attention_heads=4,
        linear_units=2048,
        num_blocks=12,
        input_layer="conv2d",
        macaron_style=True,
        rel_pos_type="latest",
        pos_enc_layer_type="rel_pos",
        selfattention_layer_type="rel_selfattn",
        activation_type="swish",
        use_cnn_module=True,
        cnn_module_kernel=31,
        subnet_depths=[8, 12],
        subnet_widths=[1024, 2048],
        subnet_bits=[4, 8],
    )


@pytest.mark.parametrize("name", list(TABLE2))
def test_conformer_ratio_matches_table2(swbd_conformer, name):
    want, params_m = TABLE2[name]
    if name in TABLE2_MISPRINTS:  # all of the Conformer encoder is quantized: 8 bits = 2 x 4 bits
        want = round(TABLE2[TABLE2_MISPRINTS[name]][0] / 2, 1)
        assert want != TABLE2[name][0]
    assert round(swbd_conformer.compression_ratio(name), 1) == want
    assert round(swbd_conformer.subnet_size(name).params / 1e6) == params_m


def test_conformer_baseline_is_1x_and_counts_like_a_stock_encoder(swbd_conformer):
    """The float baseline 12-2048-32bit is outside the trained space but is counted."""
    base = swbd_conformer.subnet_size("12-2048-32bit")
    assert base.quantized_params == 0 and base.paper_bits == FULL_PRECISION * base.params
    assert swbd_conformer.compression_ratio("12-2048-32bit") == 1.0
    assert base.params == swbd_conformer.subnet_size("12-2048-8bit").params
    with pytest.raises(ValueError, match="does not fit"):
        swbd_conformer.subnet_size("12-4096-8bit")


def test_misprint_argument_holds(swbd_conformer):
    """A 4-bit subnet is at most twice as small as the same subnet at 8 bits."""
    r8 = swbd_conformer.compression_ratio("8-1024-8bit")
    r4 = swbd_conformer.compression_ratio("8-1024-4bit")
    assert r4 <= 2 * r8 + 1e-9
    assert 2 * TABLE2["8-1024-8bit"][0] < TABLE2["8-1024-4bit"][0]  # the paper's pair violates it


def test_storage_counting_is_below_the_paper_counting(swbd_conformer):
    """``storage=True`` (what a packed export holds) keeps norms, biases and steps at
    32 bits, so it is always the smaller ratio."""
    for name in TABLE2:
        assert swbd_conformer.compression_ratio(name, storage=True) < swbd_conformer.compression_ratio(name)


@pytest.fixture(scope="module")
def wav2vec2_base(tmp_path_factory):
    """The real ``allinone_wav2vec2`` encoder at wav2vec2-base shapes (transformers'
    default Wav2Vec2Config), built from a config.json alone on the meta device."""
    from transformers import Wav2Vec2Config

    from espnet_allinone.encoders.wav2vec2 import AllInOneWav2Vec2Encoder

    d = tmp_path_factory.mktemp("wav2vec2_base_config")
    Wav2Vec2Config(vocab_size=32).save_pretrained(d)
    with torch.device("meta"):
        return AllInOneWav2Vec2Encoder(
            1, str(d), subnet_depths=[11, 12], subnet_widths=[2560, 3072], subnet_bits=[6, 8],
            load_weights=False,
        )


def test_wav2vec2_ratio_matches_table4(wav2vec2_base):
    assert round(wav2vec2_base.subnet_size("12-3072-32bit").params / 1e6) == 94  # Sys. 0
    got = {n: wav2vec2_base.compression_ratio(n) for n in TABLE4}
    for name, want in TABLE4.items():
        # the module docstring's finding: equal to two decimals or at most 0.02 above
        assert want - 0.005 <= got[name] <= want + 0.02, (name, got[name], want)
    # the order of the paper's column is kept: more compression, larger ratio
    assert sorted(TABLE4, key=got.get) == sorted(TABLE4, key=TABLE4.get)


def test_wav2vec2_table4_counts_linear_weights_only(wav2vec2_base):
    """The other counting of the module docstring: only the layers' Linear weights at
    the bit-width, everything else (biases, norms, float front end) at 32 bits, step
    sizes left out: Table 4 within 0.01, 6 of 8 equal at two decimals."""
    from espnet_allinone.elastic import ElasticWeight

    encoder = wav2vec2_base
    largest = encoder.subnet_size("12-3072-32bit").params
    got = {}
    for name in TABLE4:
        with encoder.using_subnet(name) as spec:
            layers = list(encoder.elastic_layers)
            assert len(layers) == spec.depth
            steps = sum(m.sliced()[0].size(0) for layer in layers for m in layer.modules()
                        if isinstance(m, ElasticWeight))
        got[name] = FULL_PRECISION * largest / (encoder.subnet_size(name).bits - FULL_PRECISION * steps)
        assert abs(got[name] - TABLE4[name]) < 0.01 + 1e-9, (name, got[name])
    assert sum(round(got[n], 2) == TABLE4[n] for n in TABLE4) == 6


def test_wav2vec2_param_column(wav2vec2_base):
    """Table 4 "#Parm.": 94m, 85m, 87m, 79m (the CTC head, 25k, is not in the encoder)."""
    want = {"12-3072": 94, "12-2560": 85, "11-3072": 87, "11-2560": 79}
    for arch, millions in want.items():
        for bits in (6, 8):
            assert round(wav2vec2_base.subnet_size(f"{arch}-{bits}bit").params / 1e6) == millions


def test_measure_counts_meta_modules_without_initialising_steps():
    lin = make_elastic(torch.nn.Sequential(torch.nn.Linear(4, 3)), [4])[0]
    lin.set_active(None, 4)
    size = measure([lin])
    assert size == SubnetSize(params=15, bits=12 * 4 + 3 * 32 + 3 * 32, quantized_params=15, weight_bits=4)
    assert size.paper_bits == 15 * 4
    assert not lin.steps_ready(4) and not lin.weight_log_step["4bit"].any()  # counting initialised nothing
