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
from tests.conftest import write_token_list
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
    """config.yaml + model.pth of a randomly initialised tiny all-in-one model."""
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
    torch.save(ASRTask.build_model(args).state_dict(), d / "model.pth")
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


def test_sizes_and_ratios_match_stock_encoders_of_each_shape(results):
    """#Params = a stock ConformerEncoder of the subnet's depth and width; ratio = 32-bit
    storage of the largest stock encoder over the paper's count of the subnet (every
    parameter of a module with quantized weights at the subnet's bits: all but the final
    LayerNorm here)."""
    from espnet2.asr.encoder.conformer_encoder import ConformerEncoder

    _, _, rows, _ = results
    conf = {k: v for k, v in CONFIG["encoder_conf"].items() if not k.startswith("subnet_")}

    def stock(depth, width):
        return ConformerEncoder(20, **{**conf, "num_blocks": depth, "linear_units": width})

    largest = sum(p.numel() for p in stock(2, 32).parameters())
    for name in SUBNETS:
        depth, width, bits = (int(x) for x in name.replace("bit", "").split("-"))
        enc = stock(depth, width)
        params = sum(p.numel() for p in enc.parameters())
        after_norm = sum(p.numel() for p in enc.after_norm.parameters())
        row = next(r for r in rows.values() if r["subnet"] == name and r["sys"].endswith("K"))
        assert int(row["params"]) == params, name
        paper_bits = bits * (params - after_norm) + 32 * after_norm
        assert float(row["ratio"]) == pytest.approx(32 * largest / paper_bits, rel=1e-3), name
    assert float(rows["0"]["ratio"]) == 1.0
    assert int(rows["0"]["params"]) == largest


def test_marks_follow_mapsswe(results):
    """Subnets 2-32-* were decoded at the separate systems' error rate (10%), the other
    separate systems at 35%: the all-in-one twins win those clearly."""
    _, out, rows, _ = results
    for i in range(3, 9):
        assert rows[f"{i}K"]["vs_separate_avg"] == "better"
        assert rows[f"{i}"]["vs_baseline_avg"] == "worse"
    assert rows["0"]["vs_baseline_avg"] == ""
    md = (out / "RESULTS.md").read_text()
    assert "*" in md.split("| 5K |")[1].split("\n")[0]
    assert "MAPSSWE, alpha = 0.05" in md


def test_summary_of_training_time_and_parameters(results):
    _, out, _, _ = results
    md = (out / "RESULTS.md").read_text()
    # 8 separate systems x 1800 s = 4 h against K's 1 h
    assert "training 1.0h against 4.0h in total (4.00x speed-up)" in md


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
