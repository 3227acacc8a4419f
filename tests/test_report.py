"""The report CLI on a tiny all-in-one model and generated hypothesis files (~30 s: it
builds ESPnet models and renders a plot)."""

import csv
import json
import random

import pytest
import torch
import yaml

from espnet_allinone.bin.report import main
from espnet_allinone.scoring.wer import read_text, score
from tests.conftest import as_trained, write_token_list
from tests.test_scoring import corrupt, generate, write_text

pytestmark = pytest.mark.slow

CHARS = list("abcdefgh")
CONFIG = {
    "frontend_conf": {"n_fft": 400, "hop_length": 160, "n_mels": 20},
    "encoder": "allinone_conformer",
    "encoder_conf": {
        "output_size": 16, "attention_heads": 2, "linear_units": 32, "num_blocks": 2,
        "input_layer": "conv2d", "subnet_depths": [1, 2], "subnet_widths": [16, 32],
        "subnet_bits": [4, 8],
    },
    "decoder": "transformer",
    "decoder_conf": {"attention_heads": 2, "linear_units": 32, "num_blocks": 1},
    "model": "allinone",
    "model_conf": {"ctc_weight": 0.3, "use_kl": True},
}
SUBNETS = ["2-32-8bit", "2-32-4bit", "2-16-8bit", "2-16-4bit", "1-32-8bit", "1-32-4bit", "1-16-8bit", "1-16-4bit"]
SETS = ["dev", "test"]


def _model(d, use_kl):
    """config.yaml + model.pth of a randomly initialised tiny all-in-one model, as if trained."""
    from espnet2.tasks.asr import ASRTask

    d.mkdir(parents=True)
    write_token_list(d / "tokens.txt", CHARS)
    conf = {**CONFIG, "model_conf": {**CONFIG["model_conf"], "use_kl": use_kl}}
    (d / "train.yaml").write_text(yaml.safe_dump(conf))
    args = ASRTask.get_parser().parse_args(
        ["--config", str(d / "train.yaml"), "--token_list", str(d / "tokens.txt"),
         "--token_type", "char", "--output_dir", str(d)]
    )
    (d / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    # standing in for a trained model: every subnet's step sizes and BatchNorm statistics set
    torch.save(as_trained(ASRTask.build_model(args)).state_dict(), d / "model.pth")
    return d / "config.yaml", d / "model.pth"


def _decodes(root, refs, rate_of, seed, subnets=SUBNETS):
    """<root>/<subnet>/<set>/{text,rtf} with error rate ``rate_of(subnet)``."""
    rng = random.Random(seed)
    vocab = sorted({w for r in refs.values() for t in r.values() for w in t.split()})
    for subnet in subnets:
        for s in SETS:
            d = root / subnet / s if subnet else root / s
            d.mkdir(parents=True)
            write_text(d / "text", {k: corrupt(v.split(), rate_of(subnet), rng, vocab) for k, v in refs[s].items()})
            (d / "rtf").write_text("0.1\n")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    refs = {}
    for i, s in enumerate(SETS):
        refs[s], = generate(10 + i, rates=(), n=150)
        (tmp / "data" / s).mkdir(parents=True)
        write_text(tmp / "data" / s / "text", refs[s])
    config_k, model_k = _model(tmp / "K", use_kl=True)
    config_a, _ = _model(tmp / "A", use_kl=False)
    _decodes(tmp / "K" / "decode", refs, lambda n: 0.10, 1)
    _decodes(tmp / "A" / "decode", refs, lambda n: 0.10, 2)
    # the separate decode dir also holds another table's system (6 bit: not in this space)
    _decodes(tmp / "separate", refs, lambda n: 0.10 if n.startswith("2-32") else 0.35, 3,
             subnets=SUBNETS + ["2-32-6bit"])
    _decodes(tmp / "baseline", refs, lambda n: 0.10, 4, subnets=[None])
    times = {"K": 3600.0, "A": 3000.0, "baseline": 1800.0, **{n: 1800.0 for n in SUBNETS}}
    (tmp / "times.json").write_text(json.dumps(times))
    out = tmp / "out"
    main([
        "--asr_train_config", str(config_k), "--asr_model_file", str(model_k),
        "--decode_dir", str(tmp / "K" / "decode"),
        "--data_dir", *(str(tmp / "data" / s) for s in SETS), "--out_dir", str(out),
        "--label", "K", "--other_allinone", f"A:{config_a}:{tmp / 'A' / 'decode'}",
        "--separate_decode_dir", str(tmp / "separate"),
        "--baseline_decode_dir", str(tmp / "baseline"), "--baseline_name", "2-32-32bit",
        "--train_times", str(tmp / "times.json"),
    ])
    with open(out / "results.csv") as f:
        rows = {r["sys"]: r for r in csv.DictReader(f)}
    return tmp, out, rows, refs


def test_rows_in_the_papers_order(results):
    _, out, rows, _ = results
    ids = [f"{i}" for i in range(1, 9)]
    assert list(rows) == ["0"] + ids + [f"{i}A" for i in ids] + [f"{i}K" for i in ids]
    assert [rows[f"{i + 1}K"]["subnet"] for i in range(8)] == SUBNETS
    assert rows["3K"]["subnet"] == rows["3"]["subnet"] == rows["3A"]["subnet"] == "2-16-8bit"
    assert (rows["1K"]["use_kl"], rows["1A"]["use_kl"]) == ("True", "False")
    md = (out / "RESULTS.md").read_text()
    assert "| 0 | 2-32-32bit (baseline) |" in md and "| 8K | 1-16-4bit | ✓ | ✓ |" in md
    assert (out / "wer_vs_size.png").stat().st_size > 10_000


def test_wer_per_set_and_pooled_average(results):
    tmp, _, rows, refs = results
    for s in SETS:
        hyp = read_text(tmp / "K" / "decode" / "2-16-4bit" / s / "text")
        assert float(rows["4K"][f"wer_{s}"]) == pytest.approx(score(refs[s], hyp).wer)
    per_set = [score(refs[s], read_text(tmp / "separate" / "1-16-4bit" / s / "text")) for s in SETS]
    pooled = 100 * sum(w.errors for w in per_set) / sum(w.words for w in per_set)
    assert float(rows["8"]["wer_avg"]) == pytest.approx(pooled)


def _units(depth: int, width: int):
    """Parameter counts of a subnet's encoder from CONFIG's shapes, unit by unit: the conv2d subsampling,
    each of the ``depth`` Conformer blocks (FFN of ``width`` units), the final LayerNorm. ESPnet's defaults
    where CONFIG sets nothing: no macaron FFN, a convolution module of kernel 31."""
    conf = CONFIG["encoder_conf"]
    d, idim, kernel = conf["output_size"], CONFIG["frontend_conf"]["n_mels"], 31
    f = ((idim - 1) // 2 - 1) // 2  # frequency bins left by two 3x3 stride-2 convolutions
    embed = (9 * d + d) + (9 * d * d + d) + (d * f * d + d)  # conv 1 -> d, conv d -> d, Linear(d * f, d)
    attention = 4 * (d * d + d) + d * d + 2 * d  # q, k, v, out; linear_pos (no bias); pos_bias_u, pos_bias_v
    ffn = (d * width + width) + (width * d + d)
    conv = (d * 2 * d + 2 * d) + (d * kernel + d) + 2 * d + (d * d + d)  # pointwise (GLU), depthwise, BN, pointwise
    norms = 4 * 2 * d  # norm_ff, norm_mha, norm_conv, norm_final
    return embed, [attention + ffn + conv + norms] * depth, 2 * d


def _params(name: str) -> int:
    depth, width, _ = (int(x) for x in name.replace("bit", "").split("-"))
    embed, blocks, after_norm = _units(depth, width)
    return embed + sum(blocks) + after_norm


def _paper_bits(name: str) -> int:
    """The paper's count: every parameter of a unit holding quantized weights (the subsampling and each
    block, biases and norms included) at the subnet's bits, the final LayerNorm at 32."""
    depth, width, bits = (int(x) for x in name.replace("bit", "").split("-"))
    embed, blocks, after_norm = _units(depth, width)
    return bits * (embed + sum(blocks)) + 32 * after_norm


def test_shape_counts_are_the_stock_encoders():
    """The counts below (_units) are those of a stock ESPnet ConformerEncoder of each shape."""
    from espnet2.asr.encoder.conformer_encoder import ConformerEncoder

    conf = {k: v for k, v in CONFIG["encoder_conf"].items() if not k.startswith("subnet_")}
    for name in SUBNETS:
        depth, width, _ = (int(x) for x in name.replace("bit", "").split("-"))
        enc = ConformerEncoder(CONFIG["frontend_conf"]["n_mels"],
                               **{**conf, "num_blocks": depth, "linear_units": width})
        embed, blocks, after_norm = _units(depth, width)
        assert sum(p.numel() for p in enc.embed.parameters()) == embed, name
        assert [sum(p.numel() for p in b.parameters()) for b in enc.encoders] == blocks, name
        assert sum(p.numel() for p in enc.parameters()) == embed + sum(blocks) + after_norm, name
    assert (_params("2-32-8bit"), _params("2-16-8bit"), _params("1-32-8bit"), _params("1-16-8bit")) == \
        (11424, 10368, 7488, 6960)


def test_sizes_and_ratios_are_the_block_sums_of_each_shape(results):
    """#Params, enc. size and compression ratio of every row, from the shapes of its blocks: size = the
    paper's count in MB (1e6 bytes), ratio = 32-bit storage of the largest encoder over it."""
    _, out, rows, _ = results
    largest = _params("2-32-32bit")
    for row in rows.values():
        name = row["subnet"]
        assert int(row["params"]) == _params(name), row["sys"]
        assert float(row["size_mb"]) == pytest.approx(_paper_bits(name) / 8 / 1e6, rel=1e-12), row["sys"]
        assert float(row["ratio"]) == pytest.approx(32 * largest / _paper_bits(name), rel=1e-12), row["sys"]
    assert float(rows["0"]["ratio"]) == 1.0 and float(rows["0"]["size_mb"]) == 32 * largest / 8 / 1e6
    assert float(rows["1K"]["size_mb"]) == pytest.approx(0.01152)  # (8 * 11392 + 32 * 32) bits / 8 / 1e6
    # the table's cells: the first row of a block names the shared parameters, the others "share"
    md = (out / "RESULTS.md").read_text()
    assert "| 1K | 2-32-8bit | ✓ | ✓ | 11.4k | 8 | 0.0115 | 1.0h | 3.97x |" in md
    assert "| 8K | 1-16-4bit | ✓ | ✓ | share (7.0k) | 4 | 0.00359 |  | 12.72x |" in md


def _cells(md: str) -> dict:
    """{sys: [WER dev, WER test, Avg.] cells} of the RESULTS.md table."""
    out = {}
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] != "Sys.":
            out[cells[0]] = cells[-4:-1]
    return out


def _mark(cell: str) -> str:
    return cell.lstrip("0123456789.")


# the legend's marks (the paper's convention), written out: against the baseline, then against the twin
BASELINE_MARK = {"better": "⁺", "same": "⁼", "worse": ""}
TWIN_MARK = {"better": "*", "same": "†", "worse": ""}


def test_marks_follow_mapsswe(results):
    """Every WER cell carries exactly the marks of its MAPSSWE verdicts. By construction: the 2-32-* systems
    (all-in-one and separate) were decoded at the baseline's error rate (10 %), the other separate systems at
    35 %: the 2-32-* all-in-one rows are no different from their twins (†) and from the baseline (⁼), the
    other all-in-one rows are better than their twins (*), the separate 2-32-* systems no different from the
    baseline (⁼) and the other separate systems worse (no mark); the baseline row has none."""
    _, out, rows, _ = results
    md = (out / "RESULTS.md").read_text()
    cells = _cells(md)
    assert set(cells) == set(rows)
    keys = ["dev", "test", "avg"]
    for sys_id, row in rows.items():
        want = [BASELINE_MARK.get(row[f"vs_baseline_{k}"], "") + TWIN_MARK.get(row[f"vs_separate_{k}"], "")
                for k in keys]
        assert [_mark(c) for c in cells[sys_id]] == want, sys_id
    assert [_mark(c) for c in cells["0"]] == [""] * 3  # the baseline: no marks
    for label in "AK":
        for i in (1, 2):  # same error rate as the twin and the baseline
            assert [_mark(c) for c in cells[f"{i}{label}"]] == ["⁼†"] * 3, (i, label)
        for i in range(3, 9):  # 10 % against the twin's 35 %
            assert all(_mark(c).endswith("*") for c in cells[f"{i}{label}"]), (i, label)
            assert rows[f"{i}{label}"]["vs_separate_avg"] == "better"
    for i in (1, 2):
        assert [_mark(c) for c in cells[str(i)]] == ["⁼"] * 3
    for i in range(3, 9):
        assert [_mark(c) for c in cells[str(i)]] == [""] * 3 and rows[str(i)]["vs_baseline_avg"] == "worse"
    assert "†" not in "".join(c for i in range(3, 9) for label in ("", "A", "K") for c in cells[f"{i}{label}"])
    assert rows["0"]["vs_baseline_avg"] == ""
    assert "MAPSSWE, alpha = 0.05" in md


def test_summary_of_training_time_and_parameters(results):
    _, out, rows, _ = results
    md = (out / "RESULTS.md").read_text()
    # the 8 separately trained systems hold the sum of their own encoders' parameters
    separate = sum(_params(name) for name in SUBNETS)
    assert separate == sum(int(rows[str(i)]["params"]) for i in range(1, 9)) == 72480
    largest = _params("2-32-8bit")
    shared = (f"8 systems in {largest / 1e3:.1f}k encoder parameters; the 8 separately trained systems hold "
              f"{separate / 1e3:.1f}k ({separate / largest:.2f}x)")
    assert shared == "8 systems in 11.4k encoder parameters; the 8 separately trained systems hold 72.5k (6.34x)"
    # 8 separate systems x 1800 s = 4 h against K's 1 h (A's 50 min)
    assert (f"- all-in-one K: {shared}; training 1.0h against 4.0h in total (4.00x speed-up); "
            "8 architectures have a separately trained twin.") in md.splitlines()
    assert (f"- all-in-one A: {shared}; training 50.0min against 4.0h in total (4.80x speed-up); "
            "8 architectures have a separately trained twin.") in md.splitlines()


def test_bad_other_allinone_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit):
        main(["--asr_train_config", "c", "--asr_model_file", "m", "--decode_dir", "d",
              "--data_dir", "x", "--out_dir", str(tmp_path), "--other_allinone", "A-only"])


def test_todays_invocation_of_the_mini_recipe(results):
    """run.sh stage 6 passes only the required arguments: one block of all-in-one rows."""
    tmp, _, _, _ = results
    out = tmp / "out_plain"
    main([
        "--asr_train_config", str(tmp / "K" / "config.yaml"), "--asr_model_file", str(tmp / "K" / "model.pth"),
        "--decode_dir", str(tmp / "K" / "decode"),
        "--data_dir", *(str(tmp / "data" / s) for s in SETS), "--out_dir", str(out),
    ])
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["sys"] for r in rows] == [f"{i}K" for i in range(1, 9)]  # K: trained with use_kl
    assert all(r["vs_baseline_avg"] == r["vs_separate_avg"] == "" for r in rows)
    assert (out / "wer_vs_size.png").exists() and "| 1K | 2-32-8bit |" in (out / "RESULTS.md").read_text()


def test_duplicate_labels_are_a_usage_error(results, capsys):
    tmp, _, _, _ = results
    with pytest.raises(SystemExit):
        main(["--asr_train_config", str(tmp / "K" / "config.yaml"),
              "--asr_model_file", str(tmp / "K" / "model.pth"), "--decode_dir", str(tmp / "K" / "decode"),
              "--data_dir", str(tmp / "data" / "dev"), "--out_dir", str(tmp / "out_dup"), "--label", "K",
              "--other_allinone", f"K:{tmp / 'A' / 'config.yaml'}:{tmp / 'A' / 'decode'}"])
    assert "distinct and non-empty" in capsys.readouterr().err


def test_training_time_read_from_the_models_own_log(results):
    """Without --train_times, an all-in-one model's time is its ESPnet train.log's epochs."""
    tmp, _, _, _ = results
    exp = tmp / "K_logged"
    exp.mkdir()
    (exp / "config.yaml").write_bytes((tmp / "K" / "config.yaml").read_bytes())
    (exp / "train.log").write_text("".join(
        f"[vm] 2026 (trainer:394) INFO: {e}epoch results: [train] loss=1.0, train_time=0.5, "
        f"time=1 minute and 2 seconds, total_count={10 * e}, [valid] loss=1.0, time=3 seconds, "
        f"total_count=4\n" for e in (1, 2)))
    out = tmp / "out_logged"
    main([
        "--asr_train_config", str(exp / "config.yaml"), "--asr_model_file", str(tmp / "K" / "model.pth"),
        "--decode_dir", str(tmp / "K" / "decode"),
        "--data_dir", *(str(tmp / "data" / s) for s in SETS), "--out_dir", str(out),
    ])
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {float(r["train_time_s"]) for r in rows} == {2 * (62 + 3)}


def test_layerwise_subnets_are_rows_with_their_own_size(results):
    tmp, _, rows, refs = results
    name = "2:32x8,16x4"
    _decodes(tmp / "K" / "decode", refs, lambda n: 0.05, 7, subnets=[name])
    out = tmp / "out_layerwise"
    main([
        "--asr_train_config", str(tmp / "K" / "config.yaml"), "--asr_model_file", str(tmp / "K" / "model.pth"),
        "--decode_dir", str(tmp / "K" / "decode"), "--data_dir", *(str(tmp / "data" / s) for s in SETS),
        "--out_dir", str(out), "--label", "K", "--layerwise", name,
    ])
    with open(out / "results.csv") as f:
        new = {r["sys"]: r for r in csv.DictReader(f)}
    row = new["L1K"]
    assert row["subnet"] == name and row["bits"] == "8/4"
    # its size lies between the uniform subnets it mixes
    smaller, larger = (float(new_row(new, n)["size_mb"]) for n in ("2-16-4bit", "2-32-8bit"))
    assert smaller < float(row["size_mb"]) < larger
    hyps = read_text(tmp / "K" / "decode" / name / "test" / "text")
    assert float(row["wer_test"]) == pytest.approx(score(refs["test"], hyps).wer, abs=0.01)


def new_row(rows, subnet):
    return next(r for r in rows.values() if r["subnet"] == subnet)
