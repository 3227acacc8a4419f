"""Budgeted layer-wise search: budgets, Pareto fronts, the latency model, the evolution and the CLI."""

import csv
import itertools
import random

import numpy as np
import pytest

from espnet_allinone.search import (
    Budget,
    Budgets,
    Candidate,
    LatencyModel,
    canonical,
    evolve,
    flops_fit,
    pareto_front,
    search_blocks,
)
from espnet_allinone.subnet import Subnet
from tests.conftest import make_allinone_files, make_encoder, write_tone_data


@pytest.mark.parametrize("text, kind, value", [
    ("size=1.5MB", "size", 1.5e6), ("size = 800kB", "size", 8e5), ("size=1200", "size", 1200),
    ("ratio=10x", "ratio", 10.0), ("latency=20ms", "latency", 0.02), ("latency=0.5s", "latency", 0.5),
])
def test_budget_parse(text, kind, value):
    b = Budget.parse(text)
    assert (b.kind, b.value) == (kind, pytest.approx(value))


@pytest.mark.parametrize("bad", ["size<1MB", "speed=2x", "latency=20", "ratio=3MB", "size=abc"])
def test_bad_budget_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="budget"):
        Budget.parse(bad)


def _candidate(name, size, wer, ratio=1.0):
    return Candidate(Subnet.parse(name), size, ratio, proxy_wer=wer)


def test_pareto_front_is_the_non_dominated_set():
    rng = random.Random(0)
    points = [_candidate(f"{d}-{w}-8bit", rng.randint(1, 30), rng.uniform(0, 50))
              for d, w in itertools.product(range(1, 9), range(1, 9))]
    front = pareto_front(points, lambda c: c.size_bytes)

    def dominated(c):
        return any(o.size_bytes <= c.size_bytes and o.proxy_wer <= c.proxy_wer
                   and (o.size_bytes < c.size_bytes or o.proxy_wer < c.proxy_wer) for o in points)

    assert {c.name for c in front} == {c.name for c in points if not dominated(c)}
    assert [c.size_bytes for c in front] == sorted(c.size_bytes for c in front)


def test_budgets_all_hold_and_the_first_is_the_cost():
    c = _candidate("2-32-8bit", 1.2e6, 10.0, ratio=9.0)
    assert Budgets([Budget.parse("size=1.5MB")]).admits(c)
    assert not Budgets([Budget.parse("size=1.5MB"), Budget.parse("ratio=10x")]).admits(c)
    assert Budgets([Budget.parse("ratio=5x"), Budget.parse("size=2MB")]).cost(c) == pytest.approx(1 / 9)


def test_latency_model_recovers_additive_costs_and_predicts_layerwise():
    front = {4: 0.003, 8: 0.004}
    block = {(16, 4): 0.001, (16, 8): 0.0012, (32, 4): 0.0015, (32, 8): 0.002}
    measured = {Subnet.uniform(d, w, b): front[b] + d * block[(w, b)] for d in (2, 3) for (w, b) in block}
    model = LatencyModel(measured)
    spec = Subnet(((32, 8), (16, 4), (16, 8)))
    assert model(spec) == pytest.approx(front[8] + block[(32, 8)] + block[(16, 4)] + block[(16, 8)])
    with pytest.raises(ValueError, match="width 24 at 8 bits"):
        model(Subnet(((24, 8),)))
    slope, offset = flops_fit({"a": 1.0, "b": 3.0}, {"a": 2.0, "b": 4.0})
    assert (slope, offset) == (pytest.approx(1.0), pytest.approx(1.0))


def test_evolution_respects_its_budget_and_returns_what_it_scored():
    encoder = make_encoder()
    depths, choices = search_blocks(encoder)
    assert depths == [2, 3] and choices == [(16, 4), (16, 8), (32, 4), (32, 8)]

    def make(blocks):
        spec = canonical(encoder, blocks)
        return Candidate(spec, encoder.subnet_size(spec).bits / 8, encoder.compression_ratio(spec),
                         uniform_grid=spec in encoder.subnet_space)

    def proxy(spec):  # a deterministic stand-in: more bits and width, lower "WER"
        return 100.0 / sum(w * b for w, b in spec.blocks)

    largest = make(encoder.subnet_space.largest.blocks).size_bytes
    budget = Budgets([Budget("size", 0.8 * largest)])
    scored = evolve(proxy, make, budget, depths, choices, population=6, generations=3, seed=1, log=lambda m: None)
    assert len(scored) > 10 and all(budget.admits(c) for c in scored.values())
    assert all(c.proxy_wer == proxy(c.spec) for c in scored.values())
    assert any(not c.spec.is_uniform for c in scored.values())
    front = pareto_front(scored.values(), budget.cost)
    for c in front:  # non-dominated on the search's own measurements
        assert not any(o.size_bytes <= c.size_bytes and o.proxy_wer < c.proxy_wer for o in scored.values())


@pytest.mark.parametrize("fs", [None, "16k"])  # "16k": as asr.sh writes frontend_conf
def test_search_cli_on_a_tiny_model(tmp_path, capsys, fs):
    from espnet_allinone.bin import search
    from tests.conftest import set_frontend_fs

    config_file, model_file = make_allinone_files(tmp_path / "model")
    set_frontend_fs(config_file, fs)
    write_tone_data(tmp_path / "dev", 6, 1)
    out = tmp_path / "search"
    args = ["--asr_train_config", str(config_file), "--asr_model_file", str(model_file), "--data_dir",
            str(tmp_path / "dev"), "--output_dir", str(out), "--population", "4", "--generations", "2",
            "--proxy_utts", "3", "--threads", "1"]
    budget = 30000
    assert search.main([*args, "--budget", f"size={budget}B", "--export_dir", str(tmp_path / "export")]) == 0
    printed = capsys.readouterr().out
    name = [line for line in printed.splitlines() if line.startswith("[search] chosen: ")][0].split(": ", 1)[1]
    rows = list(csv.DictReader(open(out / "candidates.csv")))
    by_name = {r["subnet"]: r for r in rows}
    assert float(by_name[name]["size_bytes"]) <= budget and by_name[name]["dev_wer"] != ""
    assert all(r["within_budget"] == "1" for r in rows if r["front"] == "1")
    assert {r["subnet"] for r in rows if r["uniform_grid"] == "1"} >= {"2-32-8bit", "1-16-4bit"}
    assert (out / "pareto.png").stat().st_size > 1000 and name in (out / "RESULTS.md").read_text()
    assert (tmp_path / "export" / name / "onnx" / "encoder_ctc.onnx").is_file()
    with pytest.raises(SystemExit):
        search.main([*args, "--budget", "size<3MB"])
    assert "malformed budget" in capsys.readouterr().err
    assert search.main([*args, "--budget", "size=10B"]) == 1  # nothing fits
    assert "no subnet fits the budget size=1e-05MB" in capsys.readouterr().err



def test_run_search_returns_what_it_writes(tmp_path):
    """The returned rows are candidates.csv's, the chosen subnet the decoded one of lowest dev WER within the
    budget, the paths those written (the export's included); nothing within the budget is an exception."""
    from espnet_allinone.search import NoSubnetWithinBudget, run_search

    config_file, model_file = make_allinone_files(tmp_path / "model")
    write_tone_data(tmp_path / "dev", 6, 1)
    lines = []
    kw = dict(proxy_utts=3, population=4, generations=1, threads=1, log=lines.append)
    result = run_search(config_file, model_file, tmp_path / "dev", "size=30000B", tmp_path / "search",
                        export_dir=tmp_path / "export", formats=["stock"], **kw)
    assert result.candidates_csv == tmp_path / "search" / "candidates.csv"
    assert list(csv.DictReader(open(result.candidates_csv))) == list(result.rows)
    decoded = {c.name for c in result.decoded}
    assert {r["subnet"] for r in result.rows if r["dev_wer"] != ""} == decoded
    assert all(r["within_budget"] == "1" and float(r["size_bytes"]) <= 30000
               for r in result.rows if r["subnet"] in decoded)
    assert {r["subnet"] for r in result.rows if r["front"] == "1"} == {c.name for c in result.front}
    assert result.chosen.dev_wer == min(c.dev_wer for c in result.decoded)
    assert f"Chosen: `{result.chosen.name}`" in result.results_md.read_text()
    assert result.pareto_png.stat().st_size > 1000
    assert result.exported == (tmp_path / "export" / result.chosen.name / "stock",)
    assert (result.exported[0] / "model.pth").is_file()
    assert lines[-1] == f"[search] chosen: {result.chosen.name}"
    with pytest.raises(NoSubnetWithinBudget, match="no subnet fits the budget size=1e-05MB"):
        run_search(config_file, model_file, tmp_path / "dev", ["size=10B"], tmp_path / "none", **kw)
    with pytest.raises(ValueError, match="malformed budget"):
        run_search(config_file, model_file, tmp_path / "dev", ["size<3MB"], tmp_path / "none", **kw)

def test_proxy_is_greedy_ctc_wer_of_the_subnet(tmp_path):
    """The proxy's hypotheses are those of the plugin's greedy-CTC Speech2Text of the same subnet."""
    from espnet2.text.build_tokenizer import build_tokenizer

    from espnet_allinone.data.audio import DataDirAudio
    from espnet_allinone.data.kaldi import read_text
    from espnet_allinone.export import load_allinone
    from espnet_allinone.inference import Speech2Text
    from espnet_allinone.search import ProxyScorer

    config_file, model_file = make_allinone_files(tmp_path / "model")
    write_tone_data(tmp_path / "dev", 5, 1)
    model = load_allinone(config_file, model_file)
    reader = DataDirAudio(tmp_path / "dev", 16000)
    wavs = {k: reader[k].wav for k in reader.keys()}
    proxy = ProxyScorer(model, wavs, read_text(tmp_path / "dev" / "text"), list(model.token_list),
                        build_tokenizer("char"), batch_size=1)
    s2t = Speech2Text(asr_train_config=str(config_file), asr_model_file=str(model_file), subnet="1-16-4bit",
                      ctc_greedy=True)
    want = {k: s2t(w)[0][0] for k, w in wavs.items()}
    assert proxy.hypotheses(Subnet.parse("1-16-4bit")) == want
    assert np.isfinite(proxy(Subnet.parse("1-16-4bit")))


@pytest.mark.slow  # a subprocess or timed runs: seconds each
def test_latency_budget_is_measured_on_the_exported_graphs(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from espnet_allinone.bin import search

    config_file, model_file = make_allinone_files(tmp_path / "model")
    write_tone_data(tmp_path / "dev", 4, 1)
    out = tmp_path / "search"
    assert search.main(["--asr_train_config", str(config_file), "--asr_model_file", str(model_file),
                        "--data_dir", str(tmp_path / "dev"), "--output_dir", str(out), "--population", "3",
                        "--generations", "1", "--proxy_utts", "2", "--threads", "1", "--final", "3",
                        "--budget", "latency=1s", "size=1MB"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("[search] latency ") >= 12 + 3  # every grid subnet, then the decoded points
    results = (out / "RESULTS.md").read_text()
    assert "predicted / measured / FLOP-model latency [ms]" in results and "Latency model error" in results
    rows = list(csv.DictReader(open(out / "candidates.csv")))
    assert all(float(r["latency_ms"]) > 0 for r in rows)
