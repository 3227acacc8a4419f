"""Switchboard scoring as the paper's (and ESPnet's egs2/swbd) recipe scores: NIST Hub5.

ESPnet's ``egs2/swbd/asr1/local/score.sh`` (after Kaldi's swbd ``score_sclite.sh``) turns the
hypotheses into a ctm (each utterance's words spread evenly over its segment, as
``utils/trn2ctm.py``), drops what the reference marks optionally deletable (``[noise]``,
``[laughter]``, ``[vocalized-noise]``, ``<unk>``, the hesitations the GLM maps to
``%HESITATION`` and partial words ``xx-``), and scores with ``hubscr.pl -h hub5 -g glm`` against
the set's NIST stm; the eval2000 / rt03 subsets (swbd/callhm, swbd/fsh) are scored on the
part of the stm of their recordings. :func:`score_hub5` does that for one data directory
(``segments``, ``stm``, ``glm``; a subset directory holds only its utterances, so its stm is
restricted to its recordings) and returns the counts of hubscr.pl's ``dtl`` report.

For the MAPSSWE test the two systems' hypotheses are compared utterance by utterance
(utterance = stm segment): :func:`normalize_texts` applies the same filtering and the GLM's
unconditional rules (each side of a rule, and each alternative of ``{ a / b }``, mapped to one
canonical spelling) to references and hypotheses, so that the test counts the errors the
Hub5 scoring counts.

    python -m espnet_allinone.scoring.hub5 --data_dir data/eval2000_swbd \\
        --hyp_text exp/asr_K/decode_12-2048-8bit/eval2000_swbd/text --out_dir .../score_hub5
"""

import argparse
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

from espnet_allinone.data import kaldi
from espnet_allinone.data.kaldi import read_text
from espnet_allinone.scoring.sclite import find_sctk, parse_dtl
from espnet_allinone.scoring.wer import WER

PathLike = Union[str, Path]

# ESPnet swbd local/score.sh: grep -i -v -E ' (UH|UM|EH|MM|HM|AH|HUH|HA|ER|OOF|HEE|ACH|EEE|EW)$'
HESITATIONS = frozenset("uh um eh mm hm ah huh ha er oof hee ach eee ew".split())
# grep -i -v -E '\[NOISE|LAUGHTER|VOCALIZED-NOISE\]'
_NOISE = re.compile(r"\[noise|laughter|vocalized-noise\]", re.IGNORECASE)


def keep_word(word: str) -> bool:
    """False for what ESPnet's swbd scoring removes from the hypotheses: noise and laughter
    marks, ``<unk>``, hesitations and partial words (ending in ``-``)."""
    return not (
        _NOISE.search(word)
        or word.lower() == "<unk>"
        or word.lower() in HESITATIONS
        or word.endswith("-")
    )


def filter_words(words: Iterable[str]) -> List[str]:
    return [w for w in words if keep_word(w)]


def read_segments(data_dir: PathLike) -> Dict[str, Tuple[str, float, float]]:
    """Kaldi ``segments`` of ``data_dir``: {utt: (recording, start, end)}."""
    return kaldi.read_segments(Path(data_dir) / "segments")


def file_and_channel(data_dir: PathLike) -> Dict[str, Tuple[str, str]]:
    """{recording: (stm file, channel)}: ``reco2file_and_channel`` if present, else the
    recording id split at its last ``-`` (``sw_4390-A`` -> ``sw_4390``, ``A``), the naming
    of ``local/cts_stm_data_prep.sh`` and of ESPnet's swbd data preparation."""
    path = Path(data_dir) / "reco2file_and_channel"
    if path.exists():
        return {r: tuple(v.split()[:2]) for r, v in kaldi.read_table(path).items()}
    recos = {reco for reco, _, _ in read_segments(data_dir).values()}
    return {r: tuple(r.rsplit("-", 1)) for r in recos}


def ctm_lines(
    hyps: Dict[str, str],
    segments: Dict[str, Tuple[str, float, float]],
    reco2fc: Dict[str, Tuple[str, str]],
) -> List[str]:
    """ctm ``file channel start duration WORD`` lines of the kept words, each utterance's
    words spread evenly over its segment (the last one ends with it), as ``trn2ctm.py``;
    words upper-cased as there. Sorted by file, channel, start time."""
    rows = []
    for utt, text in hyps.items():
        if utt not in segments:
            raise ValueError(f"hypothesis {utt!r} has no segment in the data directory")
        reco, start, end = segments[utt]
        fname, channel = reco2fc[reco]
        words = [w.upper() for w in filter_words(text.split())]
        if not words:
            continue
        step = (end - start) / len(words)
        for j, w in enumerate(words):
            t = start + j * step
            dur = end - t if j == len(words) - 1 else step
            rows.append((fname, channel, t, dur, w))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return [f"{f} {c} {t:.2f} {d:.2f} {w}" for f, c, t, d, w in rows]


def subset_stm(stm_text: str, recordings: Set[Tuple[str, str]]) -> str:
    """The stm lines of the given (file, channel) recordings, header (``;;``) lines kept."""
    out = []
    for line in stm_text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if line.startswith(";;") or (fields[0], _channel(fields[1])) in recordings:
            out.append(line)
    return "\n".join(out) + "\n"


def _channel(c: str) -> str:
    return {"1": "A", "2": "B"}.get(c, c).upper()


def find_hubscr() -> Optional[str]:
    return find_sctk("hubscr.pl")


@dataclass(frozen=True)
class Hub5Score:
    wer: WER
    dtl: Path  # hubscr.pl's detailed report


def score_hub5(
    data_dir: PathLike, hyp_text: PathLike, out_dir: PathLike, glm: Optional[PathLike] = None
) -> Hub5Score:
    """Score ``hyp_text`` (ESPnet ``text``) against ``data_dir``'s stm with hubscr.pl.

    Writes ``ref.stm`` (the stm of ``data_dir``'s recordings), ``hyp.ctm`` and hubscr.pl's
    reports (``hyp.ctm.filt.{dtl,sys,...}``) into ``out_dir``. Raises FileNotFoundError
    when hubscr.pl (Debian ``sctk``), the stm or the glm is missing.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    hubscr = find_hubscr()
    if hubscr is None:
        raise FileNotFoundError("hubscr.pl not found: apt-get install sctk, or set $SCTK_BIN")
    glm = Path(glm) if glm else data_dir / "glm"
    for f in (data_dir / "stm", glm, data_dir / "segments"):
        if not f.exists():
            raise FileNotFoundError(f"Hub5 scoring needs {f}")
    segments = read_segments(data_dir)
    reco2fc = file_and_channel(data_dir)
    recordings = {(f, _channel(c)) for r, (f, c) in reco2fc.items()
                  if r in {s[0] for s in segments.values()}}
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("hyp.ctm.filt*"):
        old.unlink()
    (out_dir / "ref.stm").write_text(subset_stm((data_dir / "stm").read_text(), recordings))
    hyps = read_text(hyp_text)
    (out_dir / "hyp.ctm").write_text("".join(f"{x}\n" for x in ctm_lines(hyps, segments, reco2fc)))
    cmd = [hubscr, "-p", str(Path(hubscr).parent), "-V", "-l", "english", "-h", "hub5",
           "-g", str(glm.resolve()), "-r", "ref.stm", "hyp.ctm"]
    run = subprocess.run(cmd, cwd=out_dir, capture_output=True, text=True)
    (out_dir / "score.log").write_text(run.stdout + run.stderr)
    dtl = out_dir / "hyp.ctm.filt.dtl"
    if run.returncode != 0 or not dtl.exists():
        raise RuntimeError(f"hubscr.pl failed ({out_dir / 'score.log'}):\n{run.stdout[-2000:]}"
                           f"{run.stderr[-2000:]}")
    return Hub5Score(WER(**parse_dtl(dtl.read_text())), dtl)


# --- GLM mapping for per-utterance comparisons (MAPSSWE) ---------------------------------

Rules = Dict[Tuple[str, ...], Tuple[str, ...]]


def read_glm(path: PathLike) -> Rules:
    """The unconditional rules (``LHS => RHS / [ ] __ [ ]``) of a NIST GLM as
    {word sequence: canonical word sequence}, upper case. Every spelling a rule equates
    (its left side and each alternative of ``{ a / b }`` on its right) maps to one canonical
    spelling, the alphabetically first of them; rules with a context are left out."""
    rules: Rules = {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.split(";;", 1)[0].strip()
        if not line or line.startswith("*") or "=>" not in line:
            continue
        lhs, rhs = (x.strip() for x in line.split("=>", 1))
        m = re.match(r"^(.*?)\s*/\s*\[(.*?)\]\s*__\s*\[(.*?)\]\s*$", rhs)
        if m is None or m.group(2).strip() or m.group(3).strip():
            continue  # a context rule
        rhs = m.group(1).strip()
        if rhs.startswith("{") and rhs.endswith("}"):
            alts = [a.strip() for a in rhs[1:-1].split("/")]
        else:
            alts = [rhs]
        spellings = {tuple(a.upper().split()) for a in alts + [lhs]} - {()}
        canon = min(spellings)
        for s in spellings:
            if s != canon:
                rules[s] = canon
    return rules


def apply_glm(words: Sequence[str], rules: Rules) -> List[str]:
    """Left to right, longest match first."""
    words = [w.upper() for w in words]
    longest = max((len(k) for k in rules), default=0)
    out, i = [], 0
    while i < len(words):
        for n in range(min(longest, len(words) - i), 0, -1):
            key = tuple(words[i:i + n])
            if key in rules:
                out.extend(rules[key])
                i += n
                break
        else:
            out.append(words[i])
            i += 1
    return out


def normalize(text: str, rules: Rules) -> str:
    """One utterance as Hub5 scoring compares it: filtered, GLM-mapped, upper case."""
    return " ".join(filter_words(apply_glm(filter_words(text.split()), rules)))


def normalize_texts(texts: Dict[str, str], glm: PathLike) -> Dict[str, str]:
    rules = read_glm(glm)
    return {k: normalize(v, rules) for k, v in texts.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", required=True, help="with segments, stm, glm")
    p.add_argument("--hyp_text", required=True, help="ESPnet text of the hypotheses")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--glm", help="default: <data_dir>/glm")
    args = p.parse_args(argv)
    score = score_hub5(args.data_dir, args.hyp_text, args.out_dir, args.glm)
    w = score.wer
    line = (f"{Path(args.data_dir).name}: WER {w.wer:.2f} % ({w.errors} errors / {w.words} words, "
            f"sub {w.substitutions} del {w.deletions} ins {w.insertions}; hubscr.pl -h hub5)")
    (Path(args.out_dir) / "result.txt").write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
