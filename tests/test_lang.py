"""espnet_allinone.lang (Kneser-Ney ARPA, lexicon) and the lexicon-constrained CTC decoder."""


import pytest
import torch
import yaml

from espnet_allinone import lang
from espnet_allinone.data.sentences import unique_sentences
from espnet_allinone.inference import CTCLexiconDecoder

SENTS = [s.split() for s in unique_sentences(300, seed=0)]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_context_is_a_distribution(order):
    lm = lang.KneserNeyLM(SENTS, order)
    targets = [w for w in lm.vocab if w != lang.BOS]
    contexts = [(), (lang.BOS,), ("the",), (lang.BOS, "the"), ("the", "red"), ("unseen", "words"),
                *(tuple(s[:k]) for s in SENTS[:5] for k in range(1, min(order, len(s) + 1)))]
    for h in contexts:
        h = h[len(h) - min(len(h), order - 1):] if order > 1 else ()
        assert sum(lm.prob((*h, w)) for w in targets) == pytest.approx(1.0, abs=1e-9), h


def test_kneser_ney_on_a_counted_example():
    # bigram KN by hand: D = n1 / (n1 + 2 n2) from the bigram counts, continuation unigrams
    sents = [["a", "b"], ["a", "b"], ["c", "b"], ["a", "c"]]
    lm = lang.KneserNeyLM(sents, 2)
    # bigram counts: <s>a 3, ab 2, </s>-ending: b</s> 3, c</s> 1; <s>c 1, cb 1, ac 1
    counts = {("<s>", "a"): 3, ("a", "b"): 2, ("b", "</s>"): 3, ("<s>", "c"): 1, ("c", "b"): 1,
              ("a", "c"): 1, ("c", "</s>"): 1}
    assert dict(lm.counts[2]) == counts
    n1, n2 = 4, 1
    d = n1 / (n1 + 2 * n2)
    # continuation counts of unigrams: distinct left words
    cont = {"a": 1, "b": 2, "c": 2, "</s>": 2}
    total1 = sum(cont.values())
    d1 = lm.discount[1]
    vocab = len(lm.vocab)  # a b c </s> <unk>
    assert vocab == 5
    p_uni = {w: max(c - d1, 0) / total1 + d1 * len(cont) / total1 / vocab for w, c in cont.items()}
    # p(b | a) = (2 - d) / 3 + d * 2 / 3 * p_uni(b)
    assert lm.prob(("a", "b")) == pytest.approx((2 - d) / 3 + d * 2 / 3 * p_uni["b"])
    # an unseen bigram backs off: p(a | b) = gamma(b) * p_uni(a), gamma(b) = d * 1 / 3
    assert lm.prob(("b", "a")) == pytest.approx(d * 1 / 3 * p_uni["a"])


def test_arpa_read_by_kenlm_gives_the_same_probabilities(tmp_path):
    kenlm_mod = pytest.importorskip("flashlight.lib.text.decoder.kenlm")
    from flashlight.lib.text.dictionary import Dictionary

    lm = lang.KneserNeyLM(SENTS, 3)
    (tmp_path / "lm.arpa").write_text(lm.arpa())
    words = Dictionary()
    for w in lm.vocab:
        words.add_entry(w)
    kenlm = kenlm_mod.KenLM(str(tmp_path / "lm.arpa"), words)
    for s in [*SENTS[:20], ["the", "words", "never", "seen", "together"], ["zzz"]]:
        state, total = kenlm.start(False), 0.0
        for w in s:
            state, score = kenlm.score(state, words.get_index(w if w in lm.vocab else lang.UNK))
            total += score
        state, score = kenlm.finish(state)
        ours = lm.sentence_logprob([w if w in lm.vocab else lang.UNK for w in s])
        assert total + score == pytest.approx(ours, abs=1e-4), s


def test_lexicon_spells_in_the_token_list(tmp_path):
    tokens = ["<blank>", "<unk>", "<space>", "a", "b", "c", "<sos/eos>"]
    assert lang.lexicon_lines(["cab", "a", "cab"], tokens) == ["a a", "cab c a b"]
    with pytest.raises(ValueError, match=r"word 'bad': characters \['d'\] are not in the token list"):
        lang.lexicon_lines(["bad"], tokens)


def test_cli_writes_lexicon_and_arpa(tmp_path):
    (tmp_path / "text").write_text("u1 the cat sat\nu2 the hat\n")
    (tmp_path / "tokens.txt").write_text("\n".join(["<blank>", "<unk>", "<space>", *"acehst", "<sos/eos>"]))
    lang.main(["--text", str(tmp_path / "text"), "--token_list", str(tmp_path / "tokens.txt"),
               "--order", "2", "--out_dir", str(tmp_path / "lang")])
    assert (tmp_path / "lang/lexicon.txt").read_text().splitlines() == [
        "cat c a t", "hat h a t", "sat s a t", "the t h e"]
    arpa = (tmp_path / "lang/word_2gram.arpa").read_text()
    assert "ngram 1=7" in arpa and "ngram 2=6" in arpa  # 5 words + </s> + <unk>, + <s>; 6 bigrams


# --- the decoder ------------------------------------------------------------------------
TOKENS = ["<blank>", "<unk>", "<space>", "a", "c", "e", "h", "t", "<sos/eos>"]


def _emission(frames):
    """(T, V) log-probs: each frame a dict {token: prob}, the rest to <blank>."""
    out = torch.full((len(frames), len(TOKENS)), 1e-6)
    for t, probs in enumerate(frames):
        for tok, p in probs.items():
            out[t, TOKENS.index(tok)] = p
        out[t, 0] = max(1e-6, 1 - sum(probs.values()))
    return out.log()


def _lexicon(tmp_path, words):
    path = tmp_path / "lexicon.txt"
    path.write_text("".join(f"{line}\n" for line in lang.lexicon_lines(words, TOKENS)))
    return str(path)


def test_lexicon_repairs_a_misspelt_word(tmp_path):
    pytest.importorskip("flashlight.lib.text.decoder")
    # greedy reads "cet": c, then e (0.5) over a (0.4), then t; "cet" is no word, "cat" is
    em = _emission([{"c": 0.9}, {}, {"e": 0.5, "a": 0.4}, {}, {"t": 0.9}])
    greedy = [TOKENS[i] for i in em.argmax(-1).tolist() if i != 0]
    assert "".join(greedy) == "cet"
    dec = CTCLexiconDecoder(TOKENS, _lexicon(tmp_path, ["cat", "hat", "tea"]), beam_size=10)
    words, ids, _ = dec(em)[0]
    assert words == ["cat"] and [TOKENS[i] for i in ids] == ["c", "a", "t"]


def test_word_lm_chooses_between_acoustically_equal_words(tmp_path):
    pytest.importorskip("flashlight.lib.text.decoder")
    # "the ?at": c and h equally likely; the LM has seen "the cat" often, "the hat" once
    em = _emission([{"t": 0.9}, {"h": 0.9}, {"e": 0.9}, {"<space>": 0.9},
                    {"c": 0.45, "h": 0.45}, {"a": 0.9}, {"t": 0.9}])
    lm = lang.KneserNeyLM([["the", "cat"]] * 5 + [["the", "hat"], ["a", "hat"]] + [["hat"]] * 4, 2)
    (tmp_path / "lm.arpa").write_text(lm.arpa())
    lex = _lexicon(tmp_path, ["the", "cat", "hat", "a"])
    with_lm = CTCLexiconDecoder(TOKENS, lex, lm=str(tmp_path / "lm.arpa"), lm_weight=2.0, beam_size=10)
    assert with_lm(em)[0][0] == ["the", "cat"]
    spoken = _emission([{"t": 0.9}, {"h": 0.9}, {"e": 0.9}, {"<space>": 0.9},
                        {"c": 0.05, "h": 0.9}, {"a": 0.9}, {"t": 0.9}])
    assert with_lm(spoken)[0][0] == ["the", "hat"]  # clear acoustics win over the LM


@pytest.mark.parametrize("tokens, conf, error", [
    (["<blank>", "<unk>", "▁the", "<sos/eos>"], {}, r"needs a char token list with \['<space>'\]"),
    (TOKENS, {"lexicon": "missing/lexicon.txt"}, "lexicon file missing/lexicon.txt not found"),
    (TOKENS, {"lm": "missing/lm.arpa"}, "lm file missing/lm.arpa not found"),
])
def test_decoder_errors_name_the_problem(tmp_path, tokens, conf, error):
    conf = {"lexicon": _lexicon(tmp_path, ["cat"]), **conf}
    with pytest.raises((ValueError, FileNotFoundError), match=error):
        CTCLexiconDecoder(tokens, **conf)


def test_decode_subnets_with_the_lexicon_decoder(tmp_path):
    """The recipe's decode loop: every hypothesis is a sequence of lexicon words."""
    pytest.importorskip("flashlight.lib.text.decoder")
    from espnet_allinone.bin import decode_subnets
    from espnet_allinone.data.kaldi import read_text
    from tests.conftest import CHARS, make_allinone_files, write_tone_data

    config, model_file = make_allinone_files(tmp_path / "model", chars=["<space>", *CHARS])
    write_tone_data(tmp_path / "data", 4, 0)
    words = ["ab", "cab", "bead", "e"]
    (tmp_path / "lexicon.txt").write_text("".join(f"{w} {' '.join(w)}\n" for w in words))
    conf = {"ctc_lexicon_decoder": {"lexicon": str(tmp_path / "lexicon.txt"), "beam_size": 5}}
    (tmp_path / "decode.yaml").write_text(yaml.safe_dump(conf))
    out = tmp_path / "out"
    assert decode_subnets.main([
        "--asr_train_config", str(config), "--asr_model_file", str(model_file),
        "--data_dir", str(tmp_path / "data"), "--config", str(tmp_path / "decode.yaml"),
        "--subnets", "1-16-4bit", "2-32-8bit", "--output_dir", str(out)]) == 0
    for subnet in ("1-16-4bit", "2-32-8bit"):
        hyps = read_text(out / subnet / "data/text")
        assert len(hyps) == 4
        assert all(w in words for h in hyps.values() for w in h.split()), hyps


def test_stock_cli_parses_the_decoder_options():
    from espnet2.bin import asr_inference

    args = asr_inference.get_parser().parse_args([
        "--output_dir", "o", "--data_path_and_name_and_type", "d,speech,sound", "--asr_train_config", "c",
        "--ctc_lexicon_decoder", "lexicon=data/lang_char/lexicon.txt", "--ctc_lexicon_decoder", "lm_weight=1.5",
        "--ctc_lexicon_decoder", "{beam_size: 20}"])
    assert args.ctc_lexicon_decoder == {"lexicon": "data/lang_char/lexicon.txt", "lm_weight": 1.5, "beam_size": 20}


def test_perplexity_of_held_out_sentences_falls_with_the_order():
    train = [s.split() for s in unique_sentences(600, seed=0)]
    held_out = [s.split() for s in unique_sentences(100, seed=1)]
    ppl = [lang.perplexity(lang.KneserNeyLM(train, n), held_out) for n in (1, 2, 3)]
    vocab = len(lang.KneserNeyLM(train, 1).vocab)
    assert vocab > ppl[0] > ppl[1] > ppl[2] > 1  # the generator's templates make words predictable
