"""The decode loop of :mod:`espnet_allinone.bin.decode_subnets` and :mod:`espnet_allinone.bin.onnx_decode`.

A decoded set is ``<out>/{text,failed,rtf}``: ``text`` one hypothesis line per utterance (empty for an
utterance that cannot be decoded), ``failed`` ``<utt> <wav.scp entry>: <reason>`` per such utterance,
``rtf`` decoding seconds / audio seconds, written last (it marks the set done). Each file is written
atomically. A set whose ``rtf`` exists and whose ``text`` holds exactly the data dir's utterances is
skipped. A decoder ``s2t`` is a callable ``(wav: (T,) float array) -> [(text, ...), ...]``
(:class:`~espnet_allinone.inference.Speech2Text`, :class:`~espnet_allinone.onnx_inference.OnnxSpeech2Text`).
"""

import logging
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from espnet_allinone.data.audio import frontend_min_samples, sample_rate
from espnet_allinone.data.kaldi import read_table
from espnet_allinone.fileio import write_text_atomic

TEXT, FAILED, DONE = "text", "failed", "rtf"


def _ids(path: Path) -> Optional[List[str]]:
    """Utterance ids of a hypothesis file; None if absent or not a table (redo the set)."""
    try:
        return list(read_table(path))
    except (FileNotFoundError, ValueError):
        return None


def read_failures(out: Path) -> Dict[str, str]:
    """{utt: reason} of a decoded set's ``failed`` file."""
    path = out / FAILED
    return read_table(path) if path.exists() else {}


def is_done(out: Path, keys: List[str]) -> bool:
    """Whether ``out`` holds a complete decode of the utterances ``keys``."""
    ids = _ids(out / TEXT)
    return (out / DONE).exists() and ids is not None and sorted(ids) == sorted(keys)


def model_sample_rate(s2t) -> int:
    """The sample rate the model was trained at: ``s2t.fs`` if it has one (an ONNX export), else its
    frontend's ``fs`` (ESPnet's default 16k)."""
    if hasattr(s2t, "fs"):
        return int(s2t.fs)
    return sample_rate(getattr(s2t.asr_train_args, "frontend_conf", None))


def min_samples(s2t) -> int:
    """Fewest samples the frontend takes: ``s2t.min_samples`` if it has one (an ONNX export), else from
    the frontend's STFT (fewer: torch's padding error); 1 if none."""
    if hasattr(s2t, "min_samples"):
        return int(s2t.min_samples)
    return frontend_min_samples(getattr(s2t.asr_model, "frontend", None))


def decode_set(s2t, data_dir: Path, out: Path, tag: str = "", keys: Optional[List[str]] = None) -> Dict:
    """Decode one data dir (or its utterances ``keys``) with the subnet ``s2t`` computes; write
    ``out/{text,failed,rtf}``.

    Returns ``{"decoded": n, "failed": {utt: reason}, "seconds": decoding time, "audio_seconds": ...}``.
    """
    import torch

    from espnet_allinone.compat import TooShortUttError
    from espnet_allinone.data.audio import BadAudio, DataDirAudio

    reader = DataDirAudio(data_dir, model_sample_rate(s2t))
    shortest, fs = min_samples(s2t), reader.fs
    lines, failed, audio_s, spent, errors = [], {}, 0.0, 0.0, 0
    for key in reader.keys() if keys is None else keys:
        try:
            audio = reader[key]
            if len(audio.wav) < shortest:
                raise BadAudio(key, audio.source, f"too short: {len(audio.wav)} samples "
                               f"({1000 * len(audio.wav) / fs:.0f} ms); the frontend needs {shortest}")
            t0 = time.perf_counter()
            try:
                with torch.no_grad():
                    hyps = s2t(audio.wav)
            except TooShortUttError as e:  # as stock asr_inference: empty result, go on
                why = str(e).split(", return empty results")[0]
                raise BadAudio(key, audio.source, f"too short: {len(audio.wav)} samples "
                               f"({1000 * len(audio.wav) / fs:.0f} ms); its features {why}") from None
            except Exception as e:  # noqa: BLE001 -- e.g. out of memory on a long recording: this one fails
                logging.debug(f"[decode] {key}", exc_info=True)
                errors += 1
                raise BadAudio(key, audio.source, f"decoding failed ({len(audio.wav) / fs:.1f} s of audio): "
                               f"{type(e).__name__}: {e}") from None
            spent += time.perf_counter() - t0
            audio_s += len(audio.wav) / fs
            lines.append(f"{key} {hyps[0][0] if hyps else ''}".rstrip())
        except BadAudio as e:
            logging.error(f"[decode] {tag}{data_dir.name}: {e}")
            failed[key] = f"{e.source}: {e.reason}"
            lines.append(key)
    if errors and errors == len(lines):  # not the data: the model, the device or the code
        raise RuntimeError(f"{data_dir}: decoding failed on every utterance ({tag.strip() or 'decode'}), "
                           f"e.g. {next(iter(failed.items()))[1]}; the set is not marked done")
    write_text_atomic(out / TEXT, "".join(f"{line}\n" for line in lines))
    write_text_atomic(out / FAILED, "".join(f"{k} {v}\n" for k, v in failed.items()))
    rtf = spent / audio_s if audio_s > 0 else float("nan")
    write_text_atomic(out / DONE, f"{rtf:.4f}\n")  # last: marks the set done
    return {"decoded": len(lines) - len(failed), "failed": failed, "seconds": spent, "audio_seconds": audio_s}


def check_data_dirs(data_dirs: List[Path]) -> Optional[str]:
    """Why ``data_dirs`` cannot be decoded, or None: a missing dir or ``wav.scp``, an unreadable
    ``segments``, or no utterance at all."""
    from espnet_allinone.data.audio import DataDirAudio

    for d in data_dirs:
        if not d.is_dir():
            return f"--data_dir {d}: no such directory"
        if not (d / "wav.scp").is_file():
            return f"--data_dir {d}: no wav.scp (a Kaldi-style data dir lists its audio there)"
        try:
            keys = DataDirAudio(d, 1).keys()
        except (OSError, ValueError) as e:
            return f"--data_dir {d}: {e}"
        if not keys:
            listing = "segments" if (d / "segments").exists() else "wav.scp"
            return f"--data_dir {d}: no utterance to decode ({listing} is empty)"
    return None


def decode_or_skip(s2t, data_dir: Path, out: Path, tag: str, **fields) -> Dict:
    """:func:`decode_set` unless ``out`` already holds a complete decode of ``data_dir`` (then skipped);
    returns ``{**fields, set, skipped, decoded, failed}`` and prints a line per decoded set."""
    from espnet_allinone.data.audio import DataDirAudio

    keys = DataDirAudio(data_dir, 1).keys()
    if is_done(out, keys):
        failed = read_failures(out)
        return dict(fields, set=data_dir.name, skipped=True, decoded=len(keys) - len(failed), failed=failed)
    r = decode_set(s2t, data_dir, out, tag=tag)
    print(f"[decode] {tag}{data_dir.name}: {r['decoded']} decoded, {len(r['failed'])} failed, "
          f"RTF {float((out / DONE).read_text()):.4f}", flush=True)
    return dict(fields, set=data_dir.name, skipped=False, **r)


def _decode_job(args) -> List[Dict]:
    job, nj, requested, opts = args
    import torch

    torch.set_num_threads(1)
    from espnet_allinone.inference import Speech2Text, select_subnet

    allow = opts["allow_untrained"]
    s2t = Speech2Text(  # at the job's first subnet (all: the largest), as checked as any other
        asr_train_config=opts["asr_train_config"], asr_model_file=opts["asr_model_file"],
        device=opts["device"], subnet=None if requested == ["all"] else requested[job], allow_untrained=allow,
        **opts["decode_conf"]
    )
    encoder = s2t.asr_model.encoder
    space = encoder.subnet_space
    subnets = space.names if requested == ["all"] else [space.get(s).name for s in requested]
    for subnet in subnets:  # every requested one, in every job, before any job decodes
        encoder.check_trained(subnet, allow)
    mine = subnets[job::nj]
    results = []
    for subnet in mine:
        spec = select_subnet(s2t.asr_model, subnet, allow)
        for data_dir in opts["data_dirs"]:
            out = Path(opts["output_dir"]) / spec.name / data_dir.name
            results.append(decode_or_skip(s2t, data_dir, out, f"job {job}: {spec} ", subnet=spec.name))
    return results


def finish(results: List[Dict], output_dir: str, fail_on_bad_audio: bool, unit: str = "subnet") -> int:
    """Print the :func:`summary`; the exit status: 1 if an utterance failed and ``fail_on_bad_audio``."""
    for line in summary(results, output_dir, unit):
        print(line, flush=True)
    if fail_on_bad_audio and any(r["failed"] for r in results):
        print("[decode] exit status 1: utterances failed and --fail_on_bad_audio is true", file=sys.stderr, flush=True)
        return 1
    return 0


def summary(results: List[Dict], output_dir: str, unit: str = "subnet") -> List[str]:
    """One line per data set: ``<set>: N decoded, M failed: ids`` (over the ``unit``s decoded)."""
    lines = []
    for name in dict.fromkeys(r["set"] for r in results):
        rs = [r for r in results if r["set"] == name]
        failed = list(dict.fromkeys(k for r in rs for k in r["failed"]))
        counts = sorted({(r["decoded"], len(r["failed"])) for r in rs})
        n = "/".join(str(c[0]) for c in counts)
        line = f"[decode] {name}: {n} decoded, {len(failed)} failed"
        if failed:
            line += f": {', '.join(failed)} (reasons in {output_dir}/<{unit}>/{name}/{FAILED})"
        skipped = sum(r["skipped"] for r in rs)
        lines.append(line + (f"; {skipped} of {len(rs)} {unit}s decoded before" if skipped else ""))
    return lines


def decode_subnets(asr_train_config: str, asr_model_file: str, data_dirs: Sequence[Path], output_dir: str,
                   subnets: Sequence[str] = ("all",), decode_conf: Optional[Dict] = None, nj: int = 1,
                   device: str = "cpu", allow_untrained: bool = False) -> List[Dict]:
    """Decode every data dir with every subnet of ``subnets`` (names, or ``["all"]``: the whole space)
    into ``<output_dir>/<subnet>/<set>/``, in ``nj`` processes (one model and one thread each).

    Returns one :func:`decode_or_skip` dict per (subnet, set). Raises
    :class:`~espnet_allinone.elastic.NeverTrainedError` before decoding anything if a subnet computes
    with never-trained state and not ``allow_untrained``.
    """
    subnets = list(subnets)
    decode_conf = dict(decode_conf if decode_conf is not None else {})
    decode_conf.pop("subnet", None)
    opts = dict(asr_train_config=asr_train_config, asr_model_file=asr_model_file, device=device,
                decode_conf=decode_conf, output_dir=output_dir, data_dirs=[Path(d) for d in data_dirs],
                allow_untrained=allow_untrained)
    nj = max(1, nj if subnets == ["all"] else min(nj, len(subnets)))
    jobs = [(j, nj, subnets, opts) for j in range(nj)]
    if nj == 1:
        return _decode_job(jobs[0])
    with multiprocessing.get_context("spawn").Pool(nj) as pool:
        return [r for rs in pool.map(_decode_job, jobs) for r in rs]


def decode_onnx(onnx_dir: str, data_dirs: Sequence[Path], output_dir: str, precisions: Sequence[str] = ("int8",),
                decode_conf: Optional[Dict] = None, threads: int = 1) -> List[Dict]:
    """Decode every data dir with the exported ONNX graphs of ``onnx_dir`` at each of ``precisions``
    into ``<output_dir>/<precision>/<set>/``; one :func:`decode_or_skip` dict per (precision, set).

    Raises ValueError or FileNotFoundError for an export or decode option
    :class:`~espnet_allinone.onnx_inference.OnnxSpeech2Text` cannot load.
    """
    from espnet_allinone.onnx_inference import OnnxSpeech2Text

    results = []
    for precision in precisions:
        s2t = OnnxSpeech2Text(onnx_dir, precision=precision, threads=threads, **(decode_conf or {}))
        for data_dir in map(Path, data_dirs):
            out = Path(output_dir) / precision / data_dir.name
            results.append(decode_or_skip(s2t, data_dir, out, f"{s2t.config['subnet']} {precision} "))
    return results
