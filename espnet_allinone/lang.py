"""Word-level resources for lexicon-constrained CTC decoding: a lexicon and an n-gram LM.

    python -m espnet_allinone.lang --text data/train/text --token_list tokens.txt --order 3 \\
        --out_dir data/lang_char

writes ``lexicon.txt`` (each training word spelt in the model's tokens) and
``word_3gram.arpa`` (interpolated Kneser-Ney, in the ARPA format KenLM and so
``torchaudio.models.decoder.ctc_decoder`` read), from the training transcripts only.

The estimator is ours: no package on PyPI estimates an n-gram LM and writes ARPA
(KenLM's ``lmplz``, which asr.sh uses, needs Boost and a C++ build). It is the textbook
interpolated Kneser-Ney (Chen & Goodman 1998) with one discount per order,
``D = n1 / (n1 + 2 n2)``; lower orders use continuation counts except for n-grams that
begin with ``<s>`` (as KenLM), and the unigram interpolates with the uniform distribution
over the vocabulary and ``<unk>``. Interpolated KN is exactly representable in ARPA: the
listed probabilities already include the lower-order term and the backoff weight of a
context is its interpolation weight.
"""

import argparse
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

from espnet_allinone.data.kaldi import read_text
from espnet_allinone.fileio import write_text_atomic

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
Ngram = Tuple[str, ...]


class KneserNeyLM:
    """Interpolated Kneser-Ney n-gram LM of word sequences.

    Args:
        sentences: word lists (without ``<s>``/``</s>``).
        order: n (>= 1).
    """

    def __init__(self, sentences: Iterable[Sequence[str]], order: int = 3):
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        self.order = order
        raw: List[Counter] = [Counter() for _ in range(order + 1)]
        for words in sentences:
            seq = [BOS, *words, EOS]
            for n in range(1, order + 1):
                for i in range(1 if n == 1 else 0, len(seq) - n + 1):  # <s> is never predicted
                    raw[n][tuple(seq[i:i + n])] += 1
        # adjusted counts: raw at the top order and for n-grams starting with <s>,
        # otherwise the number of distinct words seen before it (continuation count)
        self.counts: List[Counter] = [Counter() for _ in range(order + 1)]
        self.counts[order] = Counter(raw[order])
        for n in range(order - 1, 0, -1):
            cont = Counter(g[1:] for g in raw[n + 1])
            for g, c in raw[n].items():
                self.counts[n][g] = c if g[0] == BOS else cont.get(g, c)
        self.vocab = sorted({g[0] for g in raw[1]} | {UNK})
        self.discount = [0.0] * (order + 1)
        for n in range(1, order + 1):
            hist = Counter(self.counts[n].values())
            n1, n2 = hist.get(1, 0), hist.get(2, 0)
            self.discount[n] = n1 / (n1 + 2 * n2) if n1 + 2 * n2 > 0 else 0.5
        self._prob: List[Dict[Ngram, float]] = [{} for _ in range(order + 1)]
        self._backoff: List[Dict[Ngram, float]] = [{} for _ in range(order + 1)]
        self._estimate()

    def _estimate(self) -> None:
        for n in range(1, self.order + 1):
            total: Dict[Ngram, float] = defaultdict(float)
            types: Dict[Ngram, int] = defaultdict(int)
            for g, c in self.counts[n].items():
                total[g[:-1]] += c
                types[g[:-1]] += 1
            d = self.discount[n]
            gamma = {h: d * types[h] / total[h] for h in total}
            if n == 1:
                uniform = 1.0 / len(self.vocab)
                g0 = gamma[()]
                self._prob[1] = {(w,): max(self.counts[1].get((w,), 0) - d, 0) / total[()] + g0 * uniform
                                 for w in self.vocab}
            else:
                self._prob[n] = {g: (c - d) / total[g[:-1]] + gamma[g[:-1]] * self.prob(g[1:])
                                 for g, c in self.counts[n].items()}
            self._backoff[n - 1] = gamma

    def prob(self, ngram: Ngram) -> float:
        """p(w | h) of ``ngram = (*h, w)``, backing off through shorter histories."""
        ngram = tuple(ngram)[-self.order:]
        if not ngram:
            raise ValueError("empty n-gram")
        if len(ngram) == 1:
            return self._prob[1].get(ngram, self._prob[1][(UNK,)])
        if ngram in self._prob[len(ngram)]:
            return self._prob[len(ngram)][ngram]
        return self._backoff[len(ngram) - 1].get(ngram[:-1], 1.0) * self.prob(ngram[1:])

    def sentence_logprob(self, words: Sequence[str]) -> float:
        """log10 p(words </s> | <s>)."""
        seq = [BOS, *words, EOS]
        return sum(math.log10(self.prob(tuple(seq[max(0, i - self.order + 1):i + 1])))
                   for i in range(1, len(seq)))

    def arpa(self) -> str:
        """The model in ARPA format."""
        lines = ["", "\\data\\"]
        entries = []
        for n in range(1, self.order + 1):
            grams = sorted(self._prob[n]) + ([(BOS,)] if n == 1 else [])
            entries.append(grams)
            lines.append(f"ngram {n}={len(grams)}")
        for n, grams in enumerate(entries, start=1):
            lines += ["", f"\\{n}-grams:"]
            backoff = self._backoff[n] if n < self.order else {}
            for g in grams:
                lp = -99.0 if g == (BOS,) else math.log10(self._prob[n][g])
                line = f"{lp:.6f}\t{' '.join(g)}"
                if g in backoff and backoff[g] > 0:
                    line += f"\t{math.log10(backoff[g]):.6f}"
                lines.append(line)
        lines += ["", "\\end\\", ""]
        return "\n".join(lines)


def spell(word: str, tokens: Sequence[str]) -> List[str]:
    """``word`` as a sequence of the model's char tokens; ValueError if one is missing."""
    known = set(tokens)
    missing = sorted({c for c in word if c not in known})
    if missing:
        raise ValueError(f"word {word!r}: characters {missing} are not in the token list")
    return list(word)


def lexicon_lines(words: Iterable[str], tokens: Sequence[str]) -> List[str]:
    """``<word> <tok> <tok> ...`` for each word spellable in ``tokens`` (char token lists)."""
    return [f"{w} {' '.join(spell(w, tokens))}" for w in sorted(set(words))]


def read_token_list(path) -> List[str]:
    return [line.split()[0] for line in Path(path).read_text().splitlines() if line.strip()]


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", required=True, help="Kaldi text file of the training transcripts")
    p.add_argument("--token_list", required=True, help="the model's char token list")
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--out_dir", required=True)
    p.add_argument("--eval_text", default=None, help="also print the LM's perplexity on this Kaldi text file")
    return p


def perplexity(lm: KneserNeyLM, sentences: Sequence[Sequence[str]]) -> float:
    """Per-word perplexity (``</s>`` counted), words outside the vocabulary as ``<unk>``."""
    vocab = set(lm.vocab)
    logp = sum(lm.sentence_logprob([w if w in vocab else UNK for w in s]) for s in sentences)
    return 10 ** (-logp / sum(len(s) + 1 for s in sentences))


def main(argv=None) -> None:
    args = get_parser().parse_args(argv)
    sentences = [t.split() for t in read_text(args.text).values()]
    tokens = read_token_list(args.token_list)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lm = KneserNeyLM(sentences, args.order)
    words = [w for w in lm.vocab if w not in (BOS, EOS, UNK)]
    write_text_atomic(out / "lexicon.txt", "".join(f"{line}\n" for line in lexicon_lines(words, tokens)))
    write_text_atomic(out / f"word_{args.order}gram.arpa", lm.arpa())
    print(f"[lang] {out}/lexicon.txt: {len(words)} words; {out}/word_{args.order}gram.arpa: "
          f"order {args.order}, " + ", ".join(f"{len(lm._prob[n])} {n}-grams" for n in range(1, args.order + 1)))
    if args.eval_text:
        held_out = [t.split() for t in read_text(args.eval_text).values()]
        print(f"[lang] perplexity on {args.eval_text}: {perplexity(lm, held_out):.1f}")


if __name__ == "__main__":
    main()
