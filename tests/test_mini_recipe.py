"""A scaled-down run of the whole mini recipe: tiny corpus, one epoch, two subnets."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import jiwer
import pytest

from espnet_allinone.data.kaldi import read_text

RECIPE = Path(__file__).resolve().parents[1] / "egs2" / "mini_allinone" / "asr1"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all(shutil.which(p) for p in ("espeak-ng", "flite", "sox")),
        reason="espeak-ng/flite/sox not installed (tools/setup.sh installs them)",
    ),
]


def test_mini_recipe_end_to_end(tmp_path):
    recipe = tmp_path / "asr1"
    shutil.copytree(RECIPE, recipe, ignore=shutil.ignore_patterns("data", "exp", "dump"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(
        ["./run.sh", "--num_train", "40", "--num_dev", "4", "--num_test", "4",
         "--num_test_unseen", "4", "--num_dev_unseen", "4", "--token_type", "char",
         "--train_config", "conf/tuning/train_asr_allinone_tiny.yaml"],
        cwd=recipe, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = recipe / "exp" / "asr_allinone"
    # the default decoder is lexicon-constrained: the lexicon of stage 2 holds the training
    # words, and every hypothesis is made of them
    lexicon = {line.split()[0] for line in (recipe / "data/lang_char/lexicon.txt").read_text().splitlines()}
    assert lexicon == {w for t in read_text(recipe / "data/train/text").values() for w in t.split()}
    for subnet in ["2-64-32bit", "1-32-4bit"]:
        for split in ["dev", "dev_unseen", "test", "test_unseen"]:
            hyp = read_text(exp / "decode" / subnet / split / "text")
            assert len(hyp) == 4
            assert all(w in lexicon for h in hyp.values() for w in h.split()), hyp
    # the printed table (the paper's layout) has one row per subnet, with a WER per set,
    # their pooled average and the RTF
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| Sys. |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    rows = [line for line in lines if "| 2-64-32bit |" in line or "| 1-32-4bit |" in line]
    assert len(rows) == 2
    for row in rows:
        cells = dict(zip(columns, (c.strip() for c in row.strip("|").split("|"))))
        for split in ["dev", "dev_unseen", "test", "test_unseen"]:
            # the printed WER is the hypotheses' error rate: jiwer's Levenshtein count on the
            # decoded files agrees with the report's sclite count within one word error
            ref = read_text(recipe / "data" / split / "text")
            hyp = read_text(exp / "decode" / cells["Architecture"] / split / "text")
            keys = sorted(ref)
            words = sum(len(ref[k].split()) for k in keys)
            errors = sum(jiwer.process_words(ref[k], hyp.get(k, "") or "<empty>").wer * len(ref[k].split())
                         for k in keys)
            assert abs(float(cells[f"WER {split} [%]"]) - 100 * errors / words) <= 100 / words + 0.05, split
        assert float(cells["RTF"]) > 0
    assert "| 1-32-4bit |" in (exp / "RESULTS.md").read_text()
    assert (exp / "wer_vs_size.png").stat().st_size > 1000
    assert (exp / "results.csv").exists()

    # without flashlight-text (no wheels for Python 3.13) stages 5-6 still run, with greedy
    # CTC, and say so: a package named flashlight that fails to import stands in for its absence
    hide = tmp_path / "no_flashlight" / "flashlight"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    env_hidden = {**env, "PYTHONPATH": f"{hide.parent}:{env.get('PYTHONPATH', '')}".rstrip(":")}
    proc = subprocess.run(
        ["./run.sh", "--stage", "5", "--token_type", "char",
         "--train_config", "conf/tuning/train_asr_allinone_tiny.yaml"],
        cwd=recipe, env=env_hidden, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "flashlight-text is not installed: decoding with greedy CTC (conf/decode_asr_greedy.yaml)" in proc.stdout
    assert len(read_text(exp / "decode_asr_greedy" / "2-64-32bit" / "test" / "text")) == 4
    assert "| 1-32-4bit |" in (exp / "decode_asr_greedy" / "RESULTS.md").read_text()
