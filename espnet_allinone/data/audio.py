"""The audio of a Kaldi-style data dir (``wav.scp``, optionally ``segments``), one
utterance at a time, with a clear error for each input that cannot be decoded.

``wav.scp`` entries are read as ESPnet's ``asr.sh`` reads them when it formats a data
dir (stage 3, ``pyscripts/audio/format_wav_scp.py``): a command ending in ``|`` (e.g.
``sox a.flac -t wav - |``) through ``kaldiio.open_like_kaldi`` and soundfile, a file with
``espnet2.fileio.sound_scp.soundfile_read``; with a ``segments`` file each utterance is
``[int(start * rate):int(end * rate)]`` of its recording (``end = -1``: to the end).

Rules for inputs that are not what the model was trained on:

- another sample rate: resampled to the model's rate (as ``format_wav_scp.py --fs``
  does), with a warning;
- several channels: the first one is used (what ESPnet's ``DefaultFrontend`` does in
  evaluation), with a warning;
- unreadable (missing file, not audio, failing command), empty, or shorter than the
  model can take: :class:`BadAudio`, which names the utterance, the entry and why.
"""

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from espnet_allinone.data.kaldi import read_segments, read_table


def sample_rate(frontend_conf: Optional[Dict]) -> int:
    """The sample rate of a model's ``frontend_conf``, read as ESPnet's frontends read ``fs``: an
    int, or a size string such as the ``16k`` asr.sh writes (humanfriendly); 16000, ESPnet's
    default, when absent."""
    fs = (frontend_conf or {}).get("fs", 16000)
    if isinstance(fs, str):
        import humanfriendly

        try:
            fs = humanfriendly.parse_size(fs)
        except humanfriendly.InvalidSize as e:
            raise ValueError(f"frontend_conf fs={fs!r} is no sample rate: {e}") from None
    return int(fs)


def frontend_min_samples(frontend) -> int:
    """Fewest samples an ESPnet frontend's STFT takes (fewer: torch's padding error); 1 without an STFT."""
    stft = getattr(frontend, "stft", None)
    if stft is None:
        return 1
    return stft.n_fft // 2 + 1 if stft.center else stft.n_fft


class BadAudio(Exception):
    """An utterance that cannot be decoded: a data problem, not a bug."""

    def __init__(self, utt: str, source: str, reason: str):
        super().__init__(f"utterance {utt} ({source}): {reason}")
        self.utt, self.source, self.reason = utt, source, reason


@dataclass
class Audio:
    """One utterance, ready for the model: ``wav`` (samples,) float32 at the model's rate."""

    utt: str
    source: str
    wav: np.ndarray
    warnings: List[str] = field(default_factory=list)


def _read_entry(entry: str) -> Tuple[np.ndarray, int]:
    """(samples, channels) float32 and the rate of one ``wav.scp`` entry."""
    import soundfile

    if entry.endswith("|"):
        import kaldiio

        f = kaldiio.open_like_kaldi(entry, "rb")
        data = f.read()
        status = f.close()  # the command's exit status (<< 8), None if 0
        if status:
            raise RuntimeError(f"the command exited with status {status >> 8}")
        array, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return array, rate
    from espnet2.fileio.sound_scp import soundfile_read

    if not Path(entry).is_file():
        raise FileNotFoundError("no such file")
    return soundfile_read(entry, dtype="float32", always_2d=True)


class DataDirAudio:
    """The utterances of ``data_dir`` at ``fs`` Hz, mono.

    Args:
        data_dir: with ``wav.scp`` and optionally ``segments``.
        fs: the model's sample rate.
    """

    def __init__(self, data_dir, fs: int):
        self.data_dir, self.fs = Path(data_dir), int(fs)
        self.wav_scp = read_table(self.data_dir / "wav.scp")
        self.segments: Optional[Dict[str, Tuple[str, float, float]]] = None
        seg_file = self.data_dir / "segments"
        if seg_file.exists():
            self.segments = read_segments(seg_file)
            for utt, (reco, _, _) in self.segments.items():
                if reco not in self.wav_scp:
                    raise ValueError(f"{seg_file}: {utt} is cut from {reco}, which wav.scp does not list")
        self._cached: Tuple[Optional[str], Optional[Tuple[np.ndarray, int]]] = (None, None)

    def keys(self) -> List[str]:
        """Utterance ids in file order (of ``segments`` when there is one)."""
        return list(self.segments if self.segments is not None else self.wav_scp)

    def source(self, utt: str) -> str:
        if self.segments is None:
            return self.wav_scp[utt]
        reco, start, end = self.segments[utt]
        return f"{self.wav_scp[reco]} [{start:g}-{end:g} s of {reco}]"

    def _recording(self, utt: str, reco: str) -> Tuple[np.ndarray, int]:
        if self._cached[0] != reco:  # segments of a recording usually follow each other
            self._cached = (None, None)
            try:
                self._cached = (reco, _read_entry(self.wav_scp[reco]))
            except Exception as e:  # soundfile, OS and command errors: all unreadable
                raise BadAudio(utt, self.source(utt), f"unreadable: {type(e).__name__}: {e}") from None
        return self._cached[1]

    def __getitem__(self, utt: str) -> Audio:
        if self.segments is None:
            array, rate = self._recording(utt, utt)
        else:
            reco, start, end = self.segments[utt]
            array, rate = self._recording(utt, reco)
            array = array[int(start * rate): int(end * rate)] if end != -1 else array[int(start * rate):]
        audio = Audio(utt, self.source(utt), array[:, 0])
        if array.shape[0] == 0:
            raise BadAudio(utt, audio.source, "empty: 0 samples")
        if array.shape[1] > 1:
            audio.warnings.append(f"{array.shape[1]} channels: decoding the first one")
        if rate != self.fs:
            import torch
            import torchaudio.functional

            audio.wav = torchaudio.functional.resample(
                torch.from_numpy(np.ascontiguousarray(audio.wav)), rate, self.fs
            ).numpy()
            audio.warnings.append(f"sampled at {rate} Hz: resampled to the model's {self.fs} Hz")
        for w in audio.warnings:
            logging.warning(f"utterance {utt} ({audio.source}): {w}")
        return audio
