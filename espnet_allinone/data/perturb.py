"""Speed perturbation of a Kaldi-style data dir, written to files.

    python -m espnet_allinone.data.perturb --src data/train --dst data/train_sp --factors 0.9 1.0 1.1

What Kaldi's ``utils/perturb_data_dir_speed.sh`` (asr.sh's ``--speed_perturb_factors``)
makes, with the audio rendered once instead of kept as ``sox ... |`` pipes (ESPnet's
``sound`` loader reads files): for a factor f != 1 every utterance is played f times as
fast with sox's ``speed`` effect (tempo and pitch together, so the formants move: the
usual stand-in for other vocal tracts) and resampled to the source rate; its utterance
and speaker ids get Kaldi's prefix ``sp<f>-``. f = 1 keeps the original entries. Reads
``wav.scp`` as the decoders do (:class:`~espnet_allinone.data.audio.DataDirAudio`: files,
commands, segments); writes ``wav.scp``, ``text``, ``utt2spk``, ``spk2utt`` and
``utt2num_samples``. A dst whose ``wav.scp`` lists every utterance already is left as it is.
"""

import argparse
import io
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Sequence

import soundfile

from espnet_allinone.data.audio import DataDirAudio
from espnet_allinone.data.kaldi import read_table, write_table


def prefix(factor: float) -> str:
    """Kaldi's id prefix for ``factor`` (``sp0.9-``); empty for 1."""
    return "" if factor == 1.0 else f"sp{factor:g}-"


def speed_perturb(src, dst, factors: Sequence[float], nj: int = 2, fs: int = 16000, log=print) -> int:
    """Write the perturbed copy of data dir ``src`` (audio at ``fs``) to ``dst``; returns its utterance count."""
    src, dst = Path(src), Path(dst)
    if any(f <= 0 for f in factors) or len(set(factors)) != len(factors):
        raise ValueError(f"speed factors must be distinct and > 0, got {list(factors)}")
    sox = shutil.which("sox")
    if sox is None and any(f != 1.0 for f in factors):
        raise RuntimeError("sox not found (apt-get install sox)")
    reader = DataDirAudio(src, fs)
    keys = reader.keys()
    text = read_table(src / "text")
    # no utt2spk: each utterance its own speaker (Kaldi's convention for unknown speakers)
    utt2spk = read_table(src / "utt2spk") if (src / "utt2spk").exists() else {k: k for k in keys}
    want = sorted(prefix(f) + k for f in factors for k in keys)
    if (dst / "wav.scp").exists() and sorted(read_table(dst / "wav.scp")) == want:
        log(f"[perturb] {dst}: complete already ({len(want)} utterances)")
        return len(want)
    wav_dir = (dst / "wav").resolve()
    wav_dir.mkdir(parents=True, exist_ok=True)
    wav_scp, nsamples = {}, {}
    orig = read_table(src / "wav.scp")
    t0 = time.time()

    def one(job):
        f, key = job
        new = prefix(f) + key
        audio = reader[key]
        if f == 1.0 and key in orig:  # a whole recording: keep its entry
            return new, orig[key], len(audio.wav)
        out = wav_dir / f"{new}.wav"
        if f == 1.0:  # a segment of a recording: its own file, as the other factors
            soundfile.write(out, audio.wav, reader.fs, subtype="PCM_16")
            return new, str(out), len(audio.wav)
        buf = io.BytesIO()
        soundfile.write(buf, audio.wav, reader.fs, format="WAV", subtype="PCM_16")
        subprocess.run([sox, "-t", "wav", "-", "-t", "wav", "-b", "16", str(out), "speed", f"{f:g}",
                        "rate", str(reader.fs)], input=buf.getvalue(), check=True, capture_output=True)
        return new, str(out), soundfile.info(out).frames

    jobs = [(f, k) for f in factors for k in keys]
    with ThreadPoolExecutor(max_workers=nj) as pool:
        for i, (new, entry, n) in enumerate(pool.map(one, jobs), 1):
            wav_scp[new], nsamples[new] = entry, str(n)
            if i % 1000 == 0 or i == len(jobs):
                log(f"[perturb] {dst}: {i}/{len(jobs)} utterances ({time.time() - t0:.0f}s)")
    new_text: Dict[str, str] = {}
    new_spk: Dict[str, str] = {}
    for f in factors:
        for k in keys:
            new_text[prefix(f) + k] = text[k]
            new_spk[prefix(f) + k] = prefix(f) + utt2spk[k]
    spk2utt: Dict[str, List[str]] = {}
    for utt in sorted(new_spk):
        spk2utt.setdefault(new_spk[utt], []).append(utt)
    order = sorted(wav_scp)
    write_table(dst / "text", {k: new_text[k] for k in order})
    write_table(dst / "utt2spk", {k: new_spk[k] for k in order})
    write_table(dst / "spk2utt", {s: " ".join(u) for s, u in sorted(spk2utt.items())})
    write_table(dst / "utt2num_samples", {k: nsamples[k] for k in order})
    write_table(dst / "wav.scp", {k: wav_scp[k] for k in order})  # last: marks it complete
    return len(order)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--factors", type=float, nargs="+", default=[0.9, 1.0, 1.1])
    p.add_argument("--nj", type=int, default=2)
    p.add_argument("--fs", type=int, default=16000, help="sample rate of the audio (resampled to it if not)")
    args = p.parse_args(argv)
    speed_perturb(args.src, args.dst, args.factors, args.nj, args.fs)


if __name__ == "__main__":
    main()
