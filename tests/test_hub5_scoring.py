"""Switchboard's Hub5 scoring (espnet_allinone.scoring.hub5) on a small hand-made stm/ctm/glm."""

from pathlib import Path

import pytest

from espnet_allinone.scoring import hub5
from espnet_allinone.scoring.sclite import find_sctk

STM = """;; hand-made
;; LABEL "O" "Overall" "Overall"
;; LABEL "en" "English" "English"
;; LABEL "M" "Male" "Male"
;; LABEL "F" "Female" "Female"
sw_4390 A sw_4390_A 0.50 2.50 <O,en,M> i'm going to (uh) the store
sw_4390 B sw_4390_B 3.00 5.00 <O,en,F> yeah uh-huh that's right
en_6000 A en_6000_A 1.00 3.00 <O,en,F> okay bye
"""
GLM = """;; hand-made GLM
* name "test"
* desc "test"
* format = 'NIST1'
* max_nrules = '100'
* copy_no_hit = 'T'
* case_sensitive = 'F'
I'M => I AM / [ ] __ [ ] ;; a contraction
UH-HUH => { UH-HUH / UHHUH } / [ ] __ [ ] ;; spellings
OKAY => { OKAY / OK } / [ ] __ [ ]
GONNA => GOING TO / [ ] __ [ THE ] ;; a context rule: left out of read_glm
"""
SEGMENTS = {
    "sw_4390-A_000050-000250": ("sw_4390-A", 0.5, 2.5),
    "sw_4390-B_000300-000500": ("sw_4390-B", 3.0, 5.0),
}


def test_filter_drops_what_espnet_swbd_scoring_drops():
    words = ("[noise] i [laughter] um <unk> am [vocalized-noise] uh go- going UH Hm "
             "huh to uh-huh").split()
    assert hub5.filter_words(words) == ["i", "am", "going", "to", "uh-huh"]


def test_glm_maps_every_spelling_of_a_rule_to_one(tmp_path):
    (tmp_path / "glm").write_text(GLM)
    rules = hub5.read_glm(tmp_path / "glm")
    assert rules == {("I'M",): ("I", "AM"), ("UHHUH",): ("UH-HUH",), ("OKAY",): ("OK",)}
    # both sides of a comparison end up in the same spelling
    assert hub5.normalize("i'm okay uh uhhuh", rules) == hub5.normalize("I am ok UH-HUH", rules)
    assert hub5.normalize("i'm okay uh uhhuh", rules) == "I AM OK UH-HUH"
    assert hub5.normalize_texts({"u": "gonna um the"}, tmp_path / "glm") == {"u": "GONNA THE"}


def test_ctm_spreads_the_kept_words_over_the_segment():
    hyps = {"sw_4390-A_000050-000250": "i am um going [noise] sto- store",
            "sw_4390-B_000300-000500": "<unk>"}
    reco2fc = {"sw_4390-A": ("sw_4390", "A"), "sw_4390-B": ("sw_4390", "B")}
    assert hub5.ctm_lines(hyps, SEGMENTS, reco2fc) == [
        "sw_4390 A 0.50 0.50 I",
        "sw_4390 A 1.00 0.50 AM",
        "sw_4390 A 1.50 0.50 GOING",
        "sw_4390 A 2.00 0.50 STORE",
    ]
    with pytest.raises(ValueError, match="no segment"):
        hub5.ctm_lines({"x": "a"}, SEGMENTS, reco2fc)


def test_subset_stm_keeps_the_header_and_the_recordings():
    out = hub5.subset_stm(STM, {("sw_4390", "B")})
    assert out.splitlines() == [line for line in STM.splitlines()
                                if line.startswith(";;") or line.startswith("sw_4390 B")]


def _data_dir(root: Path) -> Path:
    d = root / "eval2000_swbd"
    d.mkdir()
    (d / "stm").write_text(STM)
    (d / "glm").write_text(GLM)
    (d / "segments").write_text("".join(f"{u} {r} {s:.2f} {e:.2f}\n"
                                        for u, (r, s, e) in SEGMENTS.items()))
    return d


@pytest.mark.skipif(find_sctk("hubscr.pl") is None, reason="NIST hubscr.pl (Debian sctk) absent")
def test_hubscr_scores_the_subset_with_the_glm(tmp_path):
    data = _data_dir(tmp_path)
    hyp = tmp_path / "text"
    # hesitation, noise, <unk> and the partial word are dropped; I'M = I AM, UH-HUH = UHHUH by
    # the GLM; (uh) is optionally deletable: one substitution (right -> wrong), one deletion (the)
    hyp.write_text("sw_4390-A_000050-000250 i am um going to [noise] sto- store\n"
                   "sw_4390-B_000300-000500 yeah uhhuh <unk> that's wrong\n")
    score = hub5.score_hub5(data, hyp, tmp_path / "score")
    assert (score.wer.substitutions, score.wer.deletions, score.wer.insertions) == (1, 1, 0)
    # en_6000 (not a recording of this data dir) is not scored
    ref = (tmp_path / "score/ref.stm").read_text()
    assert "en_6000" not in ref and ";; LABEL" in ref
    assert score.wer.sentences == 2
    assert score.wer.words == 11  # hubscr.pl's count (-D splits UH-HUH, (uh) counts)


@pytest.mark.skipif(find_sctk("hubscr.pl") is None, reason="NIST hubscr.pl (Debian sctk) absent")
def test_cli_writes_result(tmp_path, capsys):
    data = _data_dir(tmp_path)
    hyp = tmp_path / "text"
    hyp.write_text("sw_4390-A_000050-000250 i'm going to the store\n"
                   "sw_4390-B_000300-000500 yeah uh-huh that's right\n")
    hub5.main(["--data_dir", str(data), "--hyp_text", str(hyp), "--out_dir", str(tmp_path / "o")])
    assert "WER 0.00 %" in (tmp_path / "o/result.txt").read_text()
    assert "hubscr.pl -h hub5" in capsys.readouterr().out


@pytest.mark.skipif(find_sctk("hubscr.pl") is None, reason="NIST hubscr.pl (Debian sctk) absent")
def test_missing_stm_is_an_error(tmp_path):
    data = _data_dir(tmp_path)
    (data / "stm").unlink()
    with pytest.raises(FileNotFoundError, match="stm"):
        hub5.score_hub5(data, data / "segments", tmp_path / "o")


def test_report_reads_asr_sh_rtf_log(tmp_path):
    from espnet_allinone.report import read_rtf

    assert read_rtf(tmp_path) is None
    (tmp_path / "logdir").mkdir()
    (tmp_path / "logdir/calculate_rtf.log").write_text(
        "# calculate_rtf.py --log-dir ...\nTotal audio duration: 30.000 [sec]\n"
        "Total decoding time: 2.130 [sec]\nRTF: 0.071\nLatency: 266.250 [ms/sentence]\n")
    assert read_rtf(tmp_path) == pytest.approx(0.071)
    (tmp_path / "rtf").write_text("0.5\n")  # espnet_allinone.bin.decode_subnets' file first
    assert read_rtf(tmp_path) == 0.5


@pytest.mark.skipif(find_sctk("hubscr.pl") is None, reason="NIST hubscr.pl (Debian sctk) absent")
def test_report_scores_hub5_and_compares_the_mapped_words(tmp_path):
    from espnet_allinone.report import System, score_systems
    from espnet_allinone.subnet import Subnet

    data = _data_dir(tmp_path)
    (data / "text").write_text("sw_4390-A_000050-000250 i'm going to uh the store\n"
                               "sw_4390-B_000300-000500 yeah uh-huh that's right\n")
    hyps = {"base": "sw_4390-A_000050-000250 i'm going to the store\n"
                    "sw_4390-B_000300-000500 yeah uhhuh that's right\n",
            "sub": "sw_4390-A_000050-000250 i am um going to store\n"
                   "sw_4390-B_000300-000500 yeah uh-huh that's wrong\n"}
    systems = []
    for sys_id, kind, text in [("0", "baseline", hyps["base"]), ("1K", "allinone", hyps["sub"])]:
        d = tmp_path / sys_id / data.name
        d.mkdir(parents=True)
        (d / "text").write_text(text)
        (d / "logdir").mkdir()
        (d / "logdir/calculate_rtf.log").write_text("RTF: 0.25\n")
        systems.append(System(sys_id, Subnet.parse("12-2048-8bit"), kind,
                              hyp_dirs={data.name: d}))
    score_systems(systems, [data], "sclite", scoring="hub5")
    base, sub = systems
    assert base.wer[data.name].errors == 0  # I'M = I AM and UHHUH = UH-HUH by the GLM
    assert (sub.wer[data.name].substitutions, sub.wer[data.name].deletions) == (1, 1)
    assert (tmp_path / "1K" / data.name / "score_hub5/hyp.ctm.filt.dtl").exists()
    assert sub.rtf == 0.25
    # MAPSSWE on the GLM-mapped words: "sub" makes one more error than the baseline in each of two segments
    # (the deletion of THE, RIGHT -> WRONG): differences (1, 1) have zero variance, so Z = 0 (sc_stats'
    # convention), p = 1: no significant difference, in the set and pooled over the sets ("avg")
    assert sub.vs_baseline == {data.name: "same", "avg": "same"}
    assert base.vs_baseline == {} and base.vs_twin == sub.vs_twin == {}  # no twin systems given
