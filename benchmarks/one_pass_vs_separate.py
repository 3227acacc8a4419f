#!/usr/bin/env python3
"""One-pass all-in-one training vs training every system separately (paper Table 2,
small scale, on the mini recipe's embedded corpus).

    cd egs2/mini_allinone/asr1 && ./run.sh --stop_stage 2      # corpus + token list, once
    python benchmarks/one_pass_vs_separate.py --recipe_dir egs2/mini_allinone/asr1 --scale 0.02
    python benchmarks/one_pass_vs_separate.py --recipe_dir egs2/mini_allinone/asr1 --ngpu 1

Trains, with the same data, epochs and ESPnet entry point (``espnet2.bin.asr_train``):

- ``K``: the recipe's all-in-one config (``--allinone_config``, with KL);
- ``A``: the same with ``use_kl: false``;
- one system per subnet of its space (8 for the mini model), each its own model from
  scratch: an all-in-one encoder of that depth/width whose space is just that subnet
  (loss ``L_max`` only; quantized ones are QAT from scratch, as in the paper), or the
  stock Conformer for a 32-bit subnet;
- ``baseline``: the stock Conformer (``--baseline_config``) of the largest size.

It records each run's wall and CPU time (``exp/<system>/bench_time.json``), decodes every
system on the test set(s) with ``espnet_allinone.bin.decode_subnets`` (the stock baseline
with ``espnet2.bin.asr_inference``), calls ``espnet_allinone.bin.report`` for the paper-style
table (MAPSSWE marks, WER-vs-size plot) and prints/writes ``summary.md``/``summary.json``:

- P1 = sum(separate subnet systems) / all-in-one run, from wall time, CPU time and the
  training iterations alone (the paper's 3.4x adds the 8 separate systems' GPU hours,
  baseline excluded; at a small --scale, process start-up dominates wall and CPU time);
- step ratio = ESPnet's mean ``train_time`` per iteration, all-in-one / baseline;
- the targets: every all-in-one subnet WER <= its separate twin, largest <= baseline.

Resumable: a finished system (``done`` in its ``bench_time.json``) is not retrained, an
interrupted one resumes from ESPnet's checkpoint (its time adds up), finished decodes are
skipped. Rerunning with a larger ``--max_epoch`` continues every finished system from its
last epoch (ESPnet's ``--resume``; times add up; its old decodes are removed), so a longer
benchmark reuses a shorter one: copy ``exp/``, ``data/``, ``stats/`` and ``conf/`` of the
shorter run's directory into a new ``--out_dir`` to keep both. ``--scale s`` takes the
first s of train/dev/test utterances and s of the epochs (at least 1). Outputs go to
``<recipe_dir>/exp/one_pass_vs_separate[_scale<s>]``.
"""

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from espnet_allinone.checkpoint import averaged_model_name
from espnet_allinone.data.kaldi import read_table, write_table
from espnet_allinone.fileio import write_text_atomic
from espnet_allinone.subnet import FULL_PRECISION, Subnet, SubnetSpace
from espnet_allinone.train_log import step_times

PY = sys.executable
SUBSET_FILES = ("wav.scp", "text", "utt2spk")
ALLINONE_GRID_KEYS = ("subnets", "subnet_depths", "subnet_widths", "subnet_bits")


# ----------------------------------------------------------------------------- configs
def subnet_space(allinone_conf: Dict) -> SubnetSpace:
    """The subnet space an all-in-one training config declares."""
    return SubnetSpace.from_encoder_conf(allinone_conf["encoder_conf"])


def separate_config(allinone_conf: Dict, baseline_conf: Dict, spec: Subnet) -> Dict:
    """Training config of the system ``spec`` trained on its own.

    Quantized: the all-in-one config with a one-subnet space of that depth and width
    (its loss is then ESPnet's loss of that subnet alone, L_max). 32-bit: the stock
    baseline config at that depth and width.
    """
    if spec.bits == FULL_PRECISION:
        conf = json.loads(json.dumps(baseline_conf))
    else:
        conf = json.loads(json.dumps(allinone_conf))
        for key in ALLINONE_GRID_KEYS:
            conf["encoder_conf"].pop(key, None)
        conf["encoder_conf"]["subnets"] = [spec.name]
    conf["encoder_conf"].update(num_blocks=spec.depth, linear_units=spec.width)
    return conf


def benchmark_configs(allinone_conf: Dict, baseline_conf: Dict) -> Dict[str, Dict]:
    """{system label: training config}: K, A, baseline and one per subnet."""
    no_kl = json.loads(json.dumps(allinone_conf))
    no_kl["model_conf"]["use_kl"] = False
    kl = json.loads(json.dumps(allinone_conf))
    kl["model_conf"]["use_kl"] = True
    configs = {"K": kl, "A": no_kl, "baseline": baseline_conf}
    for spec in subnet_space(allinone_conf):
        configs[spec.name] = separate_config(allinone_conf, baseline_conf, spec)
    return configs


def model_file(exp: Path, conf: Dict) -> Path:
    """The averaged checkpoint ESPnet writes for the config's first best-model criterion."""
    path = exp / averaged_model_name(conf)
    if not path.exists():
        raise FileNotFoundError(f"no {path.name} in {exp}")
    return path


# ----------------------------------------------------------------------------- data
def subset(src: Path, dst: Path, num: int) -> Path:
    """Kaldi dir with the first ``num`` utterances of ``src`` (sorted ids)."""
    keep = sorted(read_table(src / "text"))[:num]
    dst.mkdir(parents=True, exist_ok=True)
    for name in SUBSET_FILES:
        if (src / name).exists():
            write_table(dst / name, read_table(src / name, keys=keep))
    return dst


def scaled(n: int, scale: float, minimum: int) -> int:
    return min(n, max(minimum, int(round(n * scale))))


# ----------------------------------------------------------------------------- logs
def speedup(times: Dict[str, Dict], allinone: str, separate: List[str], key: str) -> Optional[float]:
    """P1 = sum of the separate systems' ``key`` time / the all-in-one run's."""
    if any(times.get(s, {}).get(key) is None for s in [allinone, *separate]):
        return None
    return sum(times[s][key] for s in separate) / times[allinone][key]


# ----------------------------------------------------------------------------- runs
class RunFailed(RuntimeError):
    """A command that failed; ``cpu``: the CPU seconds it used nevertheless."""

    def __init__(self, msg: str, cpu: float):
        super().__init__(msg)
        self.cpu = cpu


def run(cmd: List[str], log: Path) -> float:
    """Run ``cmd`` with stderr+stdout to ``log``; return the CPU seconds of the child
    (:class:`RunFailed`, carrying them, if it fails)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "a") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if rc != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(True)[-20:])
        raise RunFailed(f"failed ({rc}): {' '.join(cmd)}\n{tail}", cpu)
    return cpu


class Benchmark:
    """The systems of one benchmark run, their data, training, decoding and tables."""

    def __init__(self, args):
        self.args = args
        self.recipe = Path(args.recipe_dir).resolve()
        suffix = "" if args.scale == 1.0 else f"_scale{args.scale:g}"
        self.out = Path(args.out_dir or self.recipe / f"exp/one_pass_vs_separate{suffix}").resolve()
        allinone_conf = yaml.safe_load((self.recipe / args.allinone_config).read_text())
        baseline_conf = yaml.safe_load((self.recipe / args.baseline_config).read_text())
        self.space = subnet_space(allinone_conf)
        self.configs = benchmark_configs(allinone_conf, baseline_conf)
        self.max_epoch = scaled(args.max_epoch or allinone_conf["max_epoch"], args.scale, 1)
        self.token_list = self.recipe / f"data/token_list/{args.token_type}/tokens.txt"
        self.data = self.out / "data"
        self.stats = self.out / "stats"

    @property
    def separate(self) -> List[str]:
        return self.space.names

    def log(self, msg: str):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def prepare(self):
        src = self.recipe / "data"
        if not (src / "train/text").exists() or not self.token_list.exists():
            raise SystemExit(f"{src}/train or {self.token_list} missing: run "
                             f"`./run.sh --stop_stage 2` in {self.recipe} first")
        for name, minimum in (("train", 16), ("dev", 4), *((t, 4) for t in self.args.test_sets)):
            n = len(read_table(src / name / "text"))
            subset(src / name, self.data / name, scaled(n, self.args.scale, minimum))
        (self.out / "conf").mkdir(parents=True, exist_ok=True)
        for label, conf in self.configs.items():
            (self.out / "conf" / f"{label}.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
        if not (self.stats / "train/feats_stats.npz").exists():
            self.log(f"feature statistics -> {self.stats}")
            run([PY, "-m", "espnet2.bin.asr_train", "--collect_stats", "true",
                 "--config", str(self.out / "conf/baseline.yaml"), *self.data_opts(),
                 "--train_shape_file", str(self.data / "train/wav.scp"),
                 "--valid_shape_file", str(self.data / "dev/wav.scp"),
                 "--batch_type", "unsorted", "--batch_size", "16",
                 "--output_dir", str(self.stats), "--ngpu", "0"], self.out / "stats.log")
            vocab = sum(1 for _ in self.token_list.open())
            for split in ("train", "valid"):
                shape = (self.stats / split / "text_shape").read_text().splitlines()
                (self.stats / split / f"text_shape.{self.args.token_type}").write_text(
                    "".join(f"{ln},{vocab}\n" for ln in shape if ln.strip()))

    def data_opts(self) -> List[str]:
        return [
            "--use_preprocessor", "true", "--token_type", self.args.token_type,
            "--token_list", str(self.token_list),
            "--train_data_path_and_name_and_type", f"{self.data}/train/wav.scp,speech,sound",
            "--train_data_path_and_name_and_type", f"{self.data}/train/text,text,text",
            "--valid_data_path_and_name_and_type", f"{self.data}/dev/wav.scp,speech,sound",
            "--valid_data_path_and_name_and_type", f"{self.data}/dev/text,text,text",
        ]

    def train(self, label: str) -> Dict:
        exp = self.out / "exp" / label
        record_file = exp / "bench_time.json"
        record = json.loads(record_file.read_text()) if record_file.exists() else {
            "wall": 0.0, "cpu": 0.0, "attempts": 0, "done": False}
        if record["done"]:
            trained = int(record["max_epoch"])  # a finished record holds its epochs
            if trained >= self.max_epoch:
                more = f"; {trained} epochs > --max_epoch {self.max_epoch}, used as it is" \
                    if trained > self.max_epoch else ""
                self.log(f"{label}: trained already ({record['wall']:.0f}s wall{more})")
                return record
            self.log(f"{label}: continue from epoch {trained} to {self.max_epoch} "
                     f"(its decodes of {trained} epochs are removed)")
            shutil.rmtree(self.decode_dir(label), ignore_errors=True)
        exp.mkdir(parents=True, exist_ok=True)
        self.log(f"train {label} ({self.max_epoch} epochs) -> {exp}/train.log")
        stats, tt = self.stats, self.args.token_type
        t0 = time.perf_counter()
        cpu, done = 0.0, False
        try:
            cpu = run([PY, "-m", "espnet2.bin.asr_train", "--config", str(self.out / "conf" / f"{label}.yaml"),
                       "--max_epoch", str(self.max_epoch), *self.data_opts(),
                       "--normalize", "global_mvn", "--normalize_conf", f"stats_file={stats}/train/feats_stats.npz",
                       "--train_shape_file", f"{stats}/train/speech_shape",
                       "--train_shape_file", f"{stats}/train/text_shape.{tt}",
                       "--valid_shape_file", f"{stats}/valid/speech_shape",
                       "--valid_shape_file", f"{stats}/valid/text_shape.{tt}",
                       "--resume", "true", "--output_dir", str(exp), "--ngpu", str(self.args.ngpu),
                       "--seed", str(self.args.seed)], exp / "train.log")
            done = True
        except RunFailed as e:
            cpu = e.cpu
            raise
        finally:  # an interrupted or failed attempt's time counts too (times add up)
            record = {"wall": record["wall"] + time.perf_counter() - t0, "cpu": record["cpu"] + cpu,
                      "attempts": record["attempts"] + 1, "done": done,
                      "max_epoch": self.max_epoch if done else record.get("max_epoch")}
            if record["max_epoch"] is None:
                del record["max_epoch"]
            write_text_atomic(record_file, json.dumps(record, indent=1))
        self.log(f"{label}: {record['wall']:.0f}s wall, {record['cpu']:.0f}s CPU")
        return record

    def decode_dir(self, label: str) -> Path:
        """Where the hypotheses of system ``label`` go."""
        sub = label if label in ("K", "A", "baseline") else f"separate/{label}"
        return self.dec / sub

    @property
    def dec(self) -> Path:
        """Root of the hypotheses of ``--decode_config`` (``decode`` for the default)."""
        return self.out / self.args.decode_name

    def _named(self, name: str) -> Path:
        """``name`` of the default decode config's outputs, ``<stem>_<decode_name><ext>`` otherwise."""
        if self.args.decode_name == "decode":
            return self.out / name
        stem, dot, ext = name.partition(".")
        return self.out / f"{stem}_{self.args.decode_name}{dot}{ext}"

    def decode(self, label: str):
        exp, conf = self.out / "exp" / label, self.configs[label]
        out = self.decode_dir(label)
        subnets = [None] if label == "baseline" else self.space.names if label in ("K", "A") else [label]
        texts = [(out if s is None or label not in ("K", "A") else out / s) / t / "text"
                 for s in subnets for t in self.args.test_sets]
        if all(t.exists() for t in texts):
            return  # decoded already
        self.log(f"decode {label} -> {out}")
        if conf["encoder"] != "allinone_conformer":  # stock model: ESPnet's own decoder
            for t in self.args.test_sets:
                if (out / t / "text").exists():
                    continue
                raw = out / t / "asr_inference"
                shutil.rmtree(raw, ignore_errors=True)
                run([PY, "-m", "espnet2.bin.asr_inference", "--config", str(self.recipe / self.args.decode_config),
                     "--asr_train_config", str(exp / "config.yaml"), "--asr_model_file", str(model_file(exp, conf)),
                     "--data_path_and_name_and_type", f"{self.data / t}/wav.scp,speech,sound",
                     "--output_dir", str(raw), "--ngpu", str(self.args.ngpu)], self._named("decode.log"))
                shutil.copy(raw / "1best_recog/text", out / t / "text")
            return
        if label not in ("K", "A"):
            out = out.parent  # decode_subnets writes <dir>/<subnet>/<set>/text
        run([PY, "-m", "espnet_allinone.bin.decode_subnets", "--asr_train_config", str(exp / "config.yaml"),
             "--asr_model_file", str(model_file(exp, conf)),
             "--data_dir", *(str(self.data / t) for t in self.args.test_sets), "--subnets", "all",
             "--config", str(self.recipe / self.args.decode_config), "--output_dir", str(out),
             "--nj", str(self.args.nj), "--device", "cuda" if self.args.ngpu > 0 else "cpu"],
            self._named("decode.log"))

    def report(self, times: Dict[str, Dict]):
        train_times = {k: v["wall"] for k, v in times.items()}
        (self.out / "train_times.json").write_text(json.dumps(train_times, indent=1))
        exp_k = self.out / "exp/K"
        cmd = [PY, "-m", "espnet_allinone.bin.report", "--asr_train_config", str(exp_k / "config.yaml"),
               "--asr_model_file", str(model_file(exp_k, self.configs["K"])),
               "--decode_dir", str(self.dec / "K"),
               "--data_dir", *(str(self.data / t) for t in self.args.test_sets),
               "--out_dir", str(self._named("report")), "--label", "K",
               "--other_allinone", f"A:{self.out}/exp/A/config.yaml:{self.dec}/A",
               "--separate_decode_dir", str(self.dec / "separate"),
               "--baseline_decode_dir", str(self.dec / "baseline"),
               "--baseline_name", self.space.float_baseline.name,
               "--train_times", str(self.out / "train_times.json")]
        try:
            run(cmd, self._named("report.log"))
            print((self._named("report") / "RESULTS.md").read_text())
        except RuntimeError as e:  # the report CLI is the one place for the table
            self.log(f"report CLI failed, see {self._named('report.log')}:\n{str(e)[-1500:]}")

    def summary(self, times: Dict[str, Dict]) -> Dict:
        from espnet_allinone.scoring.wer import score_files  # as the report (sclite, else jiwer)

        def wer(hyp_dir: Path) -> Optional[float]:
            errors = words = 0
            for t in self.args.test_sets:
                if not (hyp_dir / t / "text").exists():
                    return None
                w = score_files(self.data / t / "text", hyp_dir / t / "text")
                errors, words = errors + w.errors, words + w.words
            return 100.0 * errors / max(words, 1)

        dec = self.dec
        wers = {name: {"K": wer(dec / "K" / name), "A": wer(dec / "A" / name),
                       "separate": wer(dec / "separate" / name)} for name in self.separate}
        base_wer = wer(dec / "baseline")
        for label, record in times.items():  # from the logs: also for runs timed earlier
            steps = step_times(self.out / "exp" / label / "train.log")
            record["steps"], record["step_time"] = steps if steps else (None, None)
        base_step = times["baseline"]["step_time"]
        res = {
            "scale": self.args.scale, "max_epoch": self.max_epoch,
            "num_train": sum(1 for _ in (self.data / "train/text").open()),
            "test_sets": self.args.test_sets, "wer": wers, "wer_baseline": base_wer,
            "times": times,
        }
        for m in ("K", "A"):
            res[f"P1_wall_{m}"] = speedup(times, m, self.separate, "wall")
            res[f"P1_cpu_{m}"] = speedup(times, m, self.separate, "cpu")
            res[f"P1_steps_{m}"] = speedup(times, m, self.separate, "steps")
            step = times[m]["step_time"]
            res[f"step_ratio_{m}"] = step / base_step if step and base_step else None
            res[f"subnets_le_separate_{m}"] = [
                n for n in self.separate
                if None not in (wers[n][m], wers[n]["separate"]) and wers[n][m] <= wers[n]["separate"]]
            largest = wers[self.space.largest.name][m]
            res[f"largest_le_baseline_{m}"] = None if None in (largest, base_wer) else largest <= base_wer

        fmt = lambda x, f="{:.1f}": "-" if x is None else f.format(x)  # noqa: E731
        lines = [
            f"# One-pass all-in-one vs separate training (scale {self.args.scale:g}: "
            f"{res['num_train']} training utterances, {self.max_epoch} epochs, test sets "
            f"{', '.join(self.args.test_sets)}, ngpu {self.args.ngpu})", "",
            "| system | WER K [%] | WER A [%] | WER separate [%] | separate train wall [s] |",
            "|---|---|---|---|---|",
        ]
        for n in self.separate:
            lines.append(f"| {n} | {fmt(wers[n]['K'])} | {fmt(wers[n]['A'])} | {fmt(wers[n]['separate'])} "
                         f"| {times[n]['wall']:.0f} |")
        lines.append(f"| baseline {self.space.float_baseline} | | | "
                     f"{fmt(base_wer)} | {times['baseline']['wall']:.0f} |")
        lines += ["", "| | K | A | target |", "|---|---|---|---|"]
        lines.append("| all-in-one train wall / CPU [s] | " + " | ".join(
            f"{times[m]['wall']:.0f} / {times[m]['cpu']:.0f}" for m in ("K", "A")) + " | |")
        lines.append("| P1 = sum(separate) / all-in-one, wall | " + " | ".join(
            fmt(res[f"P1_wall_{m}"], "{:.2f}x") for m in ("K", "A")) + " | >= 4.0x |")
        lines.append("| P1, CPU time | " + " | ".join(
            fmt(res[f"P1_cpu_{m}"], "{:.2f}x") for m in ("K", "A")) + " | |")
        lines.append("| P1, training iterations only (ESPnet's train_time) | " + " | ".join(
            fmt(res[f"P1_steps_{m}"], "{:.2f}x") for m in ("K", "A")) + " | |")
        lines.append("| step time ratio all-in-one / baseline | " + " | ".join(
            fmt(res[f"step_ratio_{m}"], "{:.2f}x") for m in ("K", "A")) + " | <= 2.0x |")
        lines.append("| subnets with WER <= separate twin | " + " | ".join(
            f"{len(res[f'subnets_le_separate_{m}'])}/{len(self.separate)}" for m in ("K", "A")) + " | all |")
        lines.append("| largest subnet WER <= baseline | " + " | ".join(
            str(res[f"largest_le_baseline_{m}"]) for m in ("K", "A")) + " | True |")
        text = "\n".join(lines) + "\n"
        self._named("summary.md").write_text(text)
        self._named("summary.json").write_text(json.dumps(res, indent=1))
        print(text)
        return res

    def __call__(self):
        self.prepare()
        labels = ["baseline", *self.separate, "A", "K"]
        times = {label: self.train(label) for label in labels}
        if not self.args.skip_decode:
            for label in labels:
                self.decode(label)
            self.report(times)
        self.summary(times)
        self.log(f"outputs in {self.out}")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe_dir", default="egs2/mini_allinone/asr1", help="data/ and conf/ come from here")
    p.add_argument("--allinone_config", default="conf/train_asr_allinone_conformer.yaml")
    p.add_argument("--baseline_config", default="conf/tuning/train_asr_conformer_baseline.yaml")
    p.add_argument("--decode_config", default="conf/decode_asr.yaml")
    p.add_argument("--decode_name", default="decode",
                   help="hypotheses go to <out_dir>/<decode_name>, the report, summary and logs get the "
                        "name as a suffix (another --decode_config of trained systems: e.g. decode_asr_greedy)")
    p.add_argument("--token_type", default="char")
    p.add_argument("--test_sets", nargs="+", default=["test"])
    p.add_argument("--scale", type=float, default=1.0,
                   help="fraction of utterances and epochs (0 < s <= 1) for a quick run")
    p.add_argument("--max_epoch", type=int, default=None, help="default: the all-in-one config's")
    p.add_argument("--ngpu", type=int, default=0, choices=[0, 1])
    p.add_argument("--nj", type=int, default=2, help="decoding processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip_decode", action="store_true", help="train and time only")
    p.add_argument("--out_dir", default=None)
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    if not 0 < args.scale <= 1:
        raise SystemExit(f"--scale must be in (0, 1]: {args.scale}")
    Benchmark(args)()


if __name__ == "__main__":
    main()
