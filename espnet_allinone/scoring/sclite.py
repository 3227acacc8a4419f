"""NIST SCTK (``sclite``, ``sc_stats``) from Python, as ESPnet's recipes call it.

ESPnet's ``asr.sh`` scores with ``sclite -r ref.trn trn -h hyp.trn trn -i rm``; this
module writes the same ``trn`` files from ``{utt_id: words}`` dicts, runs the tool
and reads the counts back. Debian's ``sctk`` package installs the tools under
``/usr/lib/sctk/bin`` (not on ``PATH``); ``$SCTK_BIN`` overrides the search.
"""

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Iterable, Optional

_SEARCH = ("/usr/lib/sctk/bin", "/usr/local/bin")


def find_sctk(tool: str = "sclite") -> Optional[str]:
    """Path of an SCTK executable (``sclite``, ``sc_stats``), or None if absent."""
    env = os.environ.get("SCTK_BIN")
    for d in ([env] if env else []) + [None] + list(_SEARCH):
        found = shutil.which(tool, path=d)
        if found:
            return found
    return None


def trn_lines(texts: Dict[str, str], keys: Iterable[str]) -> str:
    """``trn`` lines ``words (spk-utt_id)`` for ``keys`` (missing texts are empty).

    One pseudo speaker ``spk`` for all: ``-i rm`` takes the speaker from the id
    before its first ``-``; scores do not depend on it.
    """
    return "".join(f"{texts.get(k, '')} (spk-{k})\n" for k in keys)


def run_sclite(
    refs: Dict[str, str], hyps: Dict[str, str], report: str = "dtl", title: str = "hyp"
) -> str:
    """Align ``hyps`` to ``refs`` (every utterance of ``refs``) with sclite; return
    the ``report`` (``dtl``, ``sgml``, ...) it writes to stdout for system ``title``.

    Case-sensitive (``-s``) and UTF-8, so that it scores exactly the strings given.
    Raises FileNotFoundError if sclite is not installed.
    """
    sclite = find_sctk("sclite")
    if sclite is None:
        raise FileNotFoundError("sclite not found: apt-get install sctk, or set $SCTK_BIN")
    keys = sorted(refs)
    with tempfile.TemporaryDirectory() as tmp:
        ref_trn, hyp_trn = Path(tmp) / "ref.trn", Path(tmp) / "hyp.trn"
        ref_trn.write_text(trn_lines(refs, keys), encoding="utf-8")
        hyp_trn.write_text(trn_lines(hyps, keys), encoding="utf-8")
        cmd = [sclite, "-r", str(ref_trn), "trn", "-h", str(hyp_trn), "trn", title,
               "-i", "rm", "-e", "utf-8", "-s", "-o", report, "stdout", "-f", "0"]
        out = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", check=True)
    return out.stdout


_DTL = {
    "errors": r"Percent Total Error\s*=.*\(\s*(\d+)\)",
    "substitutions": r"Percent Substitution\s*=.*\(\s*(\d+)\)",
    "deletions": r"Percent Deletions\s*=.*\(\s*(\d+)\)",
    "insertions": r"Percent Insertions\s*=.*\(\s*(\d+)\)",
    "words": r"Ref\. words\s*=.*\(\s*(\d+)\)",
    "sentences": r"^\s*sentences\s+(\d+)",
}


def parse_dtl(report: str) -> Dict[str, int]:
    """Counts of sclite's ``dtl`` report: errors, substitutions, deletions,
    insertions, words (reference), sentences."""
    out = {}
    for key, pattern in _DTL.items():
        m = re.search(pattern, report, flags=re.MULTILINE)
        if m is None:
            raise ValueError(f"no {key!r} in sclite's dtl report:\n{report[:2000]}")
        out[key] = int(m.group(1))
    return out


def run_sc_stats_mapsswe(
    refs: Dict[str, str], hyps_a: Dict[str, str], hyps_b: Dict[str, str]
) -> Dict:
    """NIST's own MAPSSWE (``sc_stats -t mapsswe``) of systems ``a`` and ``b``:
    ``{"num_segments": int, "statistic": float (3 decimals), "significant": bool}``."""
    sc_stats = find_sctk("sc_stats")
    if sc_stats is None:
        raise FileNotFoundError("sc_stats not found: apt-get install sctk, or set $SCTK_BIN")
    sgml = run_sclite(refs, hyps_a, "sgml", "A") + run_sclite(refs, hyps_b, "sgml", "B")
    out = subprocess.run(
        [sc_stats, "-p", "-t", "mapsswe", "-v", "-n", "-"], input=sgml, capture_output=True,
        text=True, encoding="utf-8", errors="replace", check=True,
    ).stdout
    m = re.search(r"# segs: (\d+)\).*\(Z Stat: ([-\d.]+)\) \(Stat Diff: (\w+)\)", out)
    if m is None:
        raise ValueError(f"no MTCH_PR_RESULTS in sc_stats' output:\n{out[-2000:]}")
    return {
        "num_segments": int(m.group(1)),
        "statistic": float(m.group(2)),
        "significant": m.group(3) == "Yes",
    }
