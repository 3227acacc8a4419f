"""The embedded default corpus: English sentences rendered by Debian's speech synthesizers.

    python -m espnet_allinone.data.synth --out_dir data --num_train 3000

writes Kaldi-style data directories ``train``, ``dev``, ``test`` (voices seen in
training), ``test_unseen`` (a voice that never appears in training) and ``dev_unseen``
(another such voice, to choose settings for unseen voices on without looking at
``test_unseen``), each with ``wav.scp`` (16 kHz mono 16-bit wavs), ``text``,
``utt2spk``, ``spk2utt`` and ``utt2num_samples``. Sentences of the splits are disjoint.
The same arguments and seed give the same corpus; ``dev_unseen`` takes its sentences
after the others', so adding it changed none of them.

Voices are ``espeak-ng:<lang>[+<variant>]`` or ``flite:<voice>``; every utterance has
its own speaking rate (and pitch for espeak-ng), and optionally additive noise at a
random SNR and reverberation (sox).
"""

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import soundfile

from espnet_allinone.data.sentences import unique_sentences

SAMPLE_RATE = 16000
TRAIN_VOICES = [
    "espeak-ng:en-us+m1", "espeak-ng:en-us+m3", "espeak-ng:en-us+m5", "espeak-ng:en-us+m7",
    "espeak-ng:en-us+f1", "espeak-ng:en-us+f3", "espeak-ng:en-us+f5", "espeak-ng:en+m2",
    "espeak-ng:en-gb+f2", "espeak-ng:en-gb-scotland+m4", "espeak-ng:en-029+m6",
    "flite:awb", "flite:rms", "flite:slt", "flite:kal16",
]
UNSEEN_VOICES = ["espeak-ng:en-gb-x-rp+f4"]
DEV_UNSEEN_VOICES = ["espeak-ng:en-gb-x-gbclan+m8"]  # an accent and a variant in no other split
PACKAGES = {"espeak-ng": "espeak-ng", "flite": "flite", "sox": "sox"}


class SynthesizerError(RuntimeError):
    pass


def _require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise SynthesizerError(
            f"'{program}' not found: install it with `apt-get install {PACKAGES[program]}`"
        )
    return path


def _espeak_data_dir() -> Path:
    out = subprocess.run([_require("espeak-ng"), "--version"], capture_output=True, text=True).stdout
    return Path(out.split("Data at:")[1].strip())


def check_voice(voice: str) -> None:
    """Raise SynthesizerError if the engine or the voice is not installed."""
    engine, _, name = voice.partition(":")
    if engine == "espeak-ng":
        lang, _, variant = name.partition("+")
        listed = subprocess.run(
            [_require("espeak-ng"), f"--voices={lang}"], capture_output=True, text=True
        ).stdout.split()
        if lang not in listed:
            raise SynthesizerError(f"espeak-ng has no language '{lang}' (voice {voice})")
        if variant and not (_espeak_data_dir() / "voices" / "!v" / variant).exists():
            raise SynthesizerError(f"espeak-ng has no variant '{variant}' (voice {voice})")
    elif engine == "flite":
        listed = subprocess.run([_require("flite"), "-lv"], capture_output=True, text=True).stdout
        if name not in listed.split(":")[-1].split():
            raise SynthesizerError(f"flite has no voice '{name}'; it has: {listed.strip()}")
    else:
        raise SynthesizerError(f"unknown engine in voice {voice!r}: use espeak-ng:... or flite:...")


@dataclass(frozen=True)
class Utterance:
    utt_id: str
    speaker: str
    voice: str
    text: str
    rate: float  # relative speaking rate (1 = the engine's default)
    pitch: int  # espeak-ng pitch 0..99
    snr_db: Optional[float]  # additive white noise, None = clean
    reverb: Optional[int]  # sox reverberance 0..100, None = dry


def speaker_id(voice: str) -> str:
    return voice.replace(":", "_").replace("+", "_").replace("-", "")


def render(utt: Utterance, path: Path) -> int:
    """Synthesize ``utt`` to a 16 kHz mono 16-bit wav; returns its number of samples."""
    engine, _, name = utt.voice.partition(":")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        if engine == "espeak-ng":
            lang_variant = name
            cmd = [_require("espeak-ng"), "-v", lang_variant, "-s", str(int(170 * utt.rate)),
                   "-p", str(utt.pitch), "-w", str(raw), utt.text]
        else:
            cmd = [_require("flite"), "-voice", name, "--setf", f"duration_stretch={1 / utt.rate:.3f}",
                   "-t", utt.text, "-o", str(raw)]
        subprocess.run(cmd, check=True, capture_output=True)
        effects = ["reverb", str(utt.reverb)] if utt.reverb is not None else []
        resampled = Path(tmp) / "16k.wav"
        subprocess.run(
            [_require("sox"), "-D", "-R", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(resampled),
             *effects],
            check=True, capture_output=True,
        )
        wav, sr = soundfile.read(resampled, dtype="float32")
    if wav.ndim > 1:
        wav = wav[:, 0]
    if utt.snr_db is not None:
        rng = np.random.default_rng(zlib.crc32(utt.utt_id.encode()))
        power = float(np.mean(wav ** 2)) + 1e-12
        wav = wav + rng.normal(0, np.sqrt(power / 10 ** (utt.snr_db / 10)), len(wav)).astype(np.float32)
    peak = float(np.abs(wav).max()) + 1e-9
    if peak > 0.99:
        wav = wav * (0.99 / peak)
    soundfile.write(path, wav, SAMPLE_RATE, subtype="PCM_16")
    return len(wav)


def plan_split(name: str, sentences: Sequence[str], voices: Sequence[str], seed: int,
               noise_prob: float, reverb_prob: float) -> List[Utterance]:
    """Assign voices (round robin) and per-utterance rate/pitch/noise deterministically."""
    rng = random.Random(f"{seed}-{name}")
    utts = []
    for i, text in enumerate(sentences):
        voice = voices[i % len(voices)]
        spk = speaker_id(voice)
        utts.append(Utterance(
            utt_id=f"{spk}-{name}-{i:05d}",
            speaker=spk,
            voice=voice,
            text=text,
            rate=round(rng.uniform(0.85, 1.2), 3),
            pitch=rng.randint(30, 70),
            snr_db=round(rng.uniform(15, 30), 1) if rng.random() < noise_prob else None,
            reverb=rng.randint(10, 50) if rng.random() < reverb_prob else None,
        ))
    return utts


def write_split(out_dir: Path, name: str, utts: List[Utterance], nj: int, log=print) -> None:
    wav_dir = (out_dir / "wav" / name).resolve()
    wav_dir.mkdir(parents=True, exist_ok=True)
    t0, done = time.time(), 0
    nsamples: Dict[str, int] = {}

    def one(u: Utterance):
        return u.utt_id, render(u, wav_dir / f"{u.utt_id}.wav")

    with ThreadPoolExecutor(max_workers=nj) as pool:
        for utt_id, n in pool.map(one, utts):
            nsamples[utt_id] = n
            done += 1
            if done % 500 == 0 or done == len(utts):
                log(f"[synth] {name}: {done}/{len(utts)} utterances ({time.time() - t0:.0f}s)")
    d = out_dir / name
    d.mkdir(parents=True, exist_ok=True)
    utts = sorted(utts, key=lambda u: u.utt_id)
    spk2utt: Dict[str, List[str]] = {}
    for u in utts:
        spk2utt.setdefault(u.speaker, []).append(u.utt_id)
    files = {
        "wav.scp": [f"{u.utt_id} {wav_dir / (u.utt_id + '.wav')}" for u in utts],
        "text": [f"{u.utt_id} {u.text}" for u in utts],
        "utt2spk": [f"{u.utt_id} {u.speaker}" for u in utts],
        "spk2utt": [f"{s} {' '.join(us)}" for s, us in sorted(spk2utt.items())],
        "utt2num_samples": [f"{u.utt_id} {nsamples[u.utt_id]}" for u in utts],
    }
    for fname, lines in files.items():
        (d / fname).write_text("\n".join(lines) + "\n")


def make_corpus(out_dir, num_train=3000, num_dev=100, num_test=200, num_test_unseen=100,
                train_voices=TRAIN_VOICES, unseen_voices=UNSEEN_VOICES, seed=0,
                noise_prob=0.3, reverb_prob=0.2, nj=2, log=print, num_dev_unseen=100,
                dev_unseen_voices=DEV_UNSEEN_VOICES) -> Dict[str, int]:
    """Write the corpus; returns the number of utterances per split."""
    out_dir = Path(out_dir)
    for a, b, what in [(train_voices, unseen_voices, "unseen voices also in training"),
                       (train_voices, dev_unseen_voices, "dev_unseen voices also in training"),
                       (unseen_voices, dev_unseen_voices, "dev_unseen voices also in test_unseen")]:
        overlap = set(a) & set(b)
        if overlap:
            raise ValueError(f"{what}: {sorted(overlap)}")
    for v in [*train_voices, *unseen_voices, *(dev_unseen_voices if num_dev_unseen else [])]:
        check_voice(v)
    _require("sox")
    sizes = {"train": num_train, "dev": num_dev, "test": num_test, "test_unseen": num_test_unseen,
             "dev_unseen": num_dev_unseen}
    voices_of = {"test_unseen": unseen_voices, "dev_unseen": dev_unseen_voices}
    # one draw of distinct sentences, cut into disjoint splits
    sentences = unique_sentences(sum(sizes.values()), seed)
    start = 0
    for name, n in sizes.items():
        voices = voices_of.get(name, train_voices)
        utts = plan_split(name, sentences[start:start + n], voices, seed, noise_prob, reverb_prob)
        start += n
        if n:
            write_split(out_dir, name, utts, nj, log)
    return sizes


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", required=True)
    p.add_argument("--num_train", type=int, default=3000)
    p.add_argument("--hours", type=float, default=None,
                   help="training data size in hours (overrides --num_train; ~2.6 s per utterance)")
    p.add_argument("--num_dev", type=int, default=100)
    p.add_argument("--num_test", type=int, default=200)
    p.add_argument("--num_test_unseen", type=int, default=100)
    p.add_argument("--num_dev_unseen", type=int, default=100)
    p.add_argument("--train_voices", nargs="+", default=TRAIN_VOICES)
    p.add_argument("--unseen_voices", nargs="+", default=UNSEEN_VOICES)
    p.add_argument("--dev_unseen_voices", nargs="+", default=DEV_UNSEEN_VOICES)
    p.add_argument("--noise_prob", type=float, default=0.3)
    p.add_argument("--reverb_prob", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nj", type=int, default=2)
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    num_train = round(args.hours * 3600 / 2.6) if args.hours else args.num_train
    try:
        make_corpus(args.out_dir, num_train, args.num_dev, args.num_test, args.num_test_unseen,
                    args.train_voices, args.unseen_voices, args.seed, args.noise_prob,
                    args.reverb_prob, args.nj, num_dev_unseen=args.num_dev_unseen,
                    dev_unseen_voices=args.dev_unseen_voices)
    except SynthesizerError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
