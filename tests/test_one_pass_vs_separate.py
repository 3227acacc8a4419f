"""Pieces of benchmarks/one_pass_vs_separate.py: the systems it trains, log parsing, P1."""

import importlib.util
from pathlib import Path

import pytest
import yaml

from espnet_allinone.encoders.conformer import AllInOneConformerEncoder

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT / "egs2/mini_allinone/asr1/conf"

_spec = importlib.util.spec_from_file_location("one_pass_vs_separate", ROOT / "benchmarks/one_pass_vs_separate.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.fixture(scope="module")
def configs():
    allinone = yaml.safe_load((MINI / "train_asr_allinone_conformer.yaml").read_text())
    baseline = yaml.safe_load((MINI / "tuning/train_asr_conformer_baseline.yaml").read_text())
    return allinone, baseline, bench.benchmark_configs(allinone, baseline)


def test_systems_are_k_a_baseline_and_one_per_subnet(configs):
    allinone, _, systems = configs
    names = bench.subnet_space(allinone).names
    assert len(names) == 8
    assert set(systems) == {"K", "A", "baseline", *names}
    assert systems["K"]["model_conf"]["use_kl"] is True
    assert systems["A"]["model_conf"]["use_kl"] is False
    # A and K differ in nothing else
    a = {**systems["A"], "model_conf": {**systems["A"]["model_conf"], "use_kl": True}}
    assert a == systems["K"]
    assert systems["baseline"]["encoder"] == "conformer"


@pytest.mark.parametrize("subnet", ["6-576-8bit", "4-288-4bit", "6-288-4bit"])
def test_separate_system_has_the_subnets_architecture(configs, subnet):
    allinone, _, systems = configs
    conf = systems[subnet]
    enc_conf = conf["encoder_conf"]
    separate = AllInOneConformerEncoder(80, **enc_conf)
    assert separate.subnet_space.names == [subnet]  # one system: its loss is L_max alone
    shared = AllInOneConformerEncoder(80, **allinone["encoder_conf"])
    assert separate.subnet_size(None) == shared.subnet_size(subnet)
    # same training recipe otherwise
    assert conf["optim_conf"] == allinone["optim_conf"] and conf["decoder_conf"] == allinone["decoder_conf"]


def test_separate_32bit_system_is_the_stock_conformer(configs):
    allinone, baseline, _ = configs
    conf = bench.separate_config(allinone, baseline, bench.Subnet.parse("4-288-32bit"))
    assert conf["encoder"] == "conformer" and conf["model"] == "espnet"
    assert (conf["encoder_conf"]["num_blocks"], conf["encoder_conf"]["linear_units"]) == (4, 288)
    assert baseline["encoder_conf"]["num_blocks"] == 6  # the baseline config is not modified


def test_speedup_is_sum_of_separate_over_allinone():
    times = {"K": {"wall": 10.0}, "a": {"wall": 30.0}, "b": {"wall": 20.0}}
    assert bench.speedup(times, "K", ["a", "b"], "wall") == pytest.approx(5.0)
    assert bench.speedup(times, "K", ["a", "missing"], "wall") is None
    assert bench.speedup({**times, "b": {"wall": None}}, "K", ["a", "b"], "wall") is None


def test_subset_keeps_first_utterances_of_every_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    ids = ["u3", "u1", "u2"]
    (src / "text").write_text("".join(f"{i} words {i}\n" for i in ids))
    (src / "wav.scp").write_text("".join(f"{i} /x/{i}.wav\n" for i in ids))
    out = bench.subset(src, tmp_path / "dst", 2)
    assert [ln.split()[0] for ln in (out / "text").read_text().splitlines()] == ["u1", "u2"]
    assert [ln.split()[0] for ln in (out / "wav.scp").read_text().splitlines()] == ["u1", "u2"]
    assert not (out / "utt2spk").exists()


@pytest.mark.parametrize("n, scale, minimum, expected", [(3000, 1.0, 16, 3000), (3000, 0.01, 16, 30),
                                                         (100, 0.01, 4, 4), (6, 0.01, 1, 1), (3, 0.5, 4, 3)])
def test_scaled(n, scale, minimum, expected):
    assert bench.scaled(n, scale, minimum) == expected


@pytest.fixture
def benchmark(tmp_path, monkeypatch):
    """A Benchmark over the mini recipe's configs whose training commands are recorded, not run."""
    args = bench.get_parser().parse_args(
        ["--recipe_dir", str(MINI.parent), "--out_dir", str(tmp_path), "--max_epoch", "6"])
    calls = []

    def fake_run(cmd, log):
        calls.append(cmd)
        return 7.0  # CPU seconds

    monkeypatch.setattr(bench, "run", fake_run)
    return bench.Benchmark(args), calls


def _finished(benchmark, label, **record):
    exp = benchmark.out / "exp" / label
    exp.mkdir(parents=True)
    (exp / "bench_time.json").write_text(bench.json.dumps(
        {"wall": 100.0, "cpu": 150.0, "attempts": 1, "done": True, **record}))
    decoded = benchmark.decode_dir(label) / "test"
    decoded.mkdir(parents=True)
    (decoded / "text").write_text("u1 a\n")
    return exp


def test_finished_system_with_enough_epochs_is_not_retrained(benchmark):
    b, calls = benchmark
    _finished(b, "K", max_epoch=6)
    assert b.train("K")["wall"] == 100.0
    assert calls == [] and (b.decode_dir("K") / "test/text").exists()


@pytest.mark.parametrize("label", ["K", "baseline", "4-288-4bit"])
def test_larger_max_epoch_continues_a_finished_system(benchmark, label):
    b, calls = benchmark
    _finished(b, label, max_epoch=3)
    record = b.train(label)
    (cmd,) = calls
    assert cmd[cmd.index("--max_epoch") + 1] == "6" and cmd[cmd.index("--resume") + 1] == "true"
    assert cmd[cmd.index("--output_dir") + 1] == str(b.out / "exp" / label)  # same dir: ESPnet resumes
    assert record["max_epoch"] == 6 and record["attempts"] == 2 and record["done"]
    assert record["cpu"] == 157.0 and record["wall"] >= 100.0  # times add up
    assert not b.decode_dir(label).exists()  # hypotheses of the shorter training are gone
    assert bench.json.loads((b.out / "exp" / label / "bench_time.json").read_text()) == record


def test_a_failed_attempt_is_recorded_and_its_time_adds_up(benchmark, monkeypatch):
    """The docstring's "times add up" holds for an attempt that fails (or is interrupted)."""
    b, calls = benchmark
    attempts = []

    def fail_once(cmd, log):
        attempts.append(cmd)
        if len(attempts) == 1:
            bench.time.sleep(0.01)
            raise bench.RunFailed("failed (1): asr_train", cpu=5.0)
        return 7.0

    monkeypatch.setattr(bench, "run", fail_once)
    record_file = b.out / "exp" / "K" / "bench_time.json"
    with pytest.raises(bench.RunFailed):
        b.train("K")
    failed = bench.json.loads(record_file.read_text())
    assert failed["attempts"] == 1 and failed["done"] is False
    assert failed["cpu"] == 5.0 and failed["wall"] >= 0.01
    record = b.train("K")  # the rerun resumes (ESPnet's --resume) and adds up
    assert record["attempts"] == 2 and record["done"] and record["cpu"] == 12.0
    assert record["wall"] >= failed["wall"]
    assert bench.json.loads(record_file.read_text()) == record
