"""Decode speech with the ONNX graphs of an exported subnet (:mod:`espnet_allinone.onnx_export`).

    from espnet_allinone.onnx_inference import OnnxSpeech2Text
    s2t = OnnxSpeech2Text("exp/export/6-576-8bit/onnx", precision="int8", beam_size=4, ctc_weight=0.5)
    text, tokens, token_ids, hyp = s2t(speech)[0]

ONNX Runtime computes the frontend, the encoder + CTC head and the decoder steps; the search is ESPnet's:
joint CTC/attention beam search (``BatchBeamSearch`` with ``CTCPrefixScorer`` and ``LengthBonus``,
weighted as ESPnet's ``Speech2Text`` weights them), greedy CTC (``ctc_greedy``), or the lexicon + word
n-gram CTC beam search of :mod:`espnet_allinone.ctc_search` (``ctc_lexicon_decoder``). The keywords are
``Speech2Text``'s, so the same decode YAML works. Nothing of the plugin's training code (model, elastic
layers, encoders, ESPnet's ASR task) is imported.
"""

import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import yaml
from espnet2.text.build_tokenizer import build_tokenizer
from espnet2.text.token_id_converter import TokenIDConverter

from espnet_allinone.compat import (
    BatchBeamSearch,
    BatchScorerInterface,
    Hypothesis,
    LengthBonus,
    TooShortUttError,
    ctc_prefix_scorer,
    ctc_window_margin_default,
)
from espnet_allinone.ctc_search import collapse_ctc, ctc_decoder_from_config

PRECISIONS = ("float", "int8", "int4")


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    # constant-fold DequantizeLinear of the stored int8 convolution codes into float weights at load: ORT
    # keeps it (for QDQ fusions) otherwise, dequantizing on every run without its convolution weight prepacking
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxDecoder(BatchScorerInterface):
    """ESPnet scorer of ``decoder.onnx``: the attention decoder's next-token log-probabilities.

    State per hypothesis: the list of per-layer (L-1, D) caches (as ESPnet's ``TransformerDecoder``).
    """

    def __init__(self, session, num_layers: int, size: int, memory_session=None):
        self.session, self.num_layers, self.size = session, num_layers, size
        self.memory_session, self.memory = memory_session, None

    def set_utterance(self, enc: np.ndarray):
        """Project the (T', D) encoder output of the utterance about to be decoded once: every layer's
        source-attention keys and values (``decoder_memory.onnx``)."""
        if self.memory_session is not None:
            self.memory = self.memory_session.run(None, {"enc": np.ascontiguousarray(enc[None], np.float32)})[0]

    def score(self, ys: torch.Tensor, state, x: torch.Tensor):
        logp, states = self.batch_score(ys.unsqueeze(0), [state], x.unsqueeze(0))
        return logp[0], states[0]

    def batch_score(self, ys: torch.Tensor, states: List, xs: torch.Tensor):
        n = ys.size(0)
        if self.memory_session is None:
            memory = np.ascontiguousarray(xs.numpy(), np.float32)
        else:
            if self.memory is None or self.memory.shape[1] != xs.size(1):
                raise RuntimeError("decoder memory of another utterance: call set_utterance first")
            memory = np.ascontiguousarray(np.broadcast_to(self.memory, (n, *self.memory.shape[1:])))
        feed = {"ys": ys.numpy().astype(np.int64), "memory": memory}
        for i in range(self.num_layers):
            if states[0] is None:
                feed[f"cache_{i}"] = np.zeros((n, 0, self.size), np.float32)
            else:
                feed[f"cache_{i}"] = np.stack([s[i] for s in states])
        logp, *cache = self.session.run(None, feed)
        return torch.from_numpy(logp), [[c[b] for c in cache] for b in range(n)]


class _Posteriors:
    """The ``ctc`` of ESPnet's ``CTCPrefixScorer``: hands it the ORT graph's log-probabilities of the
    utterance being decoded (the scorer calls ``log_softmax`` on the encoder output)."""

    logp: Optional[torch.Tensor] = None

    def log_softmax(self, x: torch.Tensor) -> torch.Tensor:
        if self.logp is None or self.logp.size(1) != x.size(-2):
            raise RuntimeError("CTC posteriors of another utterance")
        return self.logp


class OnnxSpeech2Text:
    """Speech -> n-best hypotheses with the ONNX graphs of one exported subnet.

    Args:
        onnx_dir: an :func:`~espnet_allinone.onnx_export.export_onnx` directory.
        precision: ``float``, ``int8`` (trained codes on int8 MatMuls) or ``int4`` (MatMulNBits).
        beam_size, ctc_weight, penalty, maxlenratio, minlenratio, nbest: as ESPnet's ``Speech2Text``.
        ctc_window_margin: as ESPnet's ``Speech2Text`` (CTC prefix scoring within this many encoder
            frames of the best path; 0 = exact); default: the installed ESPnet's default, so
            that one decode config decodes alike here and in PyTorch.
        ctc_greedy: greedy CTC instead of the beam search.
        ctc_lexicon_decoder: :class:`~espnet_allinone.ctc_search.CTCLexiconDecoder` keywords.
        threads: ORT intra-op threads.
        lm_weight: 0 only (no language model is exported); subnet: if given, must be the exported one.
    Call: (S,) float samples at the exported ``fs`` -> [(text, tokens, token ids, Hypothesis)], best first.
    """

    def __init__(self, onnx_dir: Union[str, Path], precision: str = "int8", beam_size: int = 10,
                 ctc_weight: float = 0.5, penalty: float = 0.0, maxlenratio: float = 0.0,
                 minlenratio: float = 0.0, nbest: int = 1, ctc_greedy: bool = False,
                 ctc_lexicon_decoder: Optional[Dict] = None, threads: int = 1, lm_weight: float = 0.0,
                 subnet: Optional[str] = None, ctc_window_margin: Optional[int] = None, **unsupported):
        if lm_weight:
            unsupported["lm_weight"] = lm_weight  # no LM graph is exported
        if unsupported:
            raise ValueError(f"OnnxSpeech2Text does not support {sorted(unsupported)} (supported: beam_size, "
                             "ctc_weight, penalty, maxlenratio, minlenratio, nbest, ctc_window_margin, ctc_greedy, "
                             "ctc_lexicon_decoder)")
        onnx_dir = Path(onnx_dir)
        config_file = onnx_dir / "config.yaml"
        if not config_file.is_file():
            raise FileNotFoundError(f"{onnx_dir}: no config.yaml (write one with "
                                    "python -m espnet_allinone.bin.export --formats onnx)")
        self.config = config = yaml.safe_load(config_file.read_text())
        files = config["files"]
        if subnet is not None and str(subnet) != config["subnet"]:
            raise ValueError(f"{onnx_dir} holds subnet {config['subnet']}, not {subnet} (export that one)")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        if precision not in files:
            have = [p for p in PRECISIONS if p in files]
            raise ValueError(f"{onnx_dir}: subnet {config['subnet']} has no {precision} graph (it has {have})")
        self.precision, self.fs, self.nbest = precision, int(config["fs"]), nbest
        self.min_samples, self.min_frames = int(config["min_samples"]), int(config["min_frames"])
        self.frontend = _session(onnx_dir / files["frontend"], threads) if "frontend" in files else None
        self.encoder = _session(onnx_dir / files[precision], threads)
        self.token_list = config["token_list"]
        self.converter = TokenIDConverter(token_list=self.token_list)
        self.tokenizer = build_tokenizer(token_type=config["token_type"])
        self.sos, self.eos, self.blank_id = config["sos"], config["eos"], config["blank_id"]
        self.maxlenratio, self.minlenratio = maxlenratio, minlenratio
        self.ctc_greedy = bool(ctc_greedy)
        self.lexicon_decoder = ctc_decoder_from_config(self.token_list, self.ctc_greedy, ctc_lexicon_decoder, nbest)
        self.beam_search = self.decoder = None
        if not self.ctc_greedy and self.lexicon_decoder is None:
            if ctc_weight < 1.0 and "decoder" not in files:
                raise ValueError(f"{onnx_dir}: no decoder.onnx (a CTC-only model): decode with ctc_weight 1.0, "
                                 "ctc_greedy or ctc_lexicon_decoder")
            self.posteriors = _Posteriors()
            if ctc_window_margin is None:
                ctc_window_margin = ctc_window_margin_default()
            scorers = dict(ctc=ctc_prefix_scorer(self.posteriors, self.eos, ctc_window_margin),
                           length_bonus=LengthBonus(len(self.token_list)))
            weights = dict(decoder=1.0 - ctc_weight, ctc=ctc_weight, length_bonus=penalty)
            if ctc_weight < 1.0:
                memory = files.get("decoder_memory")
                self.decoder = scorers["decoder"] = OnnxDecoder(
                    _session(onnx_dir / files["decoder"], threads), config["decoder_layers"],
                    config["encoder_output_size"], _session(onnx_dir / memory, threads) if memory else None)
            self.beam_search = BatchBeamSearch(
                scorers=scorers, weights=weights, beam_size=beam_size, vocab_size=len(self.token_list),
                sos=self.sos, eos=self.eos, token_list=self.token_list,
                pre_beam_score_key=None if ctc_weight == 1.0 else "full",
            ).eval()

    def encode(self, speech: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(S,) samples -> (T', D) encoder output and (T', V) CTC log-probabilities."""
        speech = np.asarray(speech, np.float32)
        if speech.ndim != 1:
            raise ValueError(f"speech must be (samples,), not {speech.shape}")
        if speech.shape[0] < self.min_samples:
            raise ValueError(f"{speech.shape[0]} samples: the frontend needs at least {self.min_samples}")
        lengths = np.array([speech.shape[0]], np.int64)
        if self.frontend is not None:
            feats, lengths = self.frontend.run(None, {"speech": speech[None], "speech_lengths": lengths})
        else:
            feats = speech[None]
        if feats.shape[1] < self.min_frames:  # as ESPnet's check_short_utt before the subsampling
            raise TooShortUttError(f"has {feats.shape[1]} frames and the encoder needs {self.min_frames}, "
                                   "return empty results", feats.shape[1], self.min_frames)
        enc, enc_lengths, logp = self.encoder.run(None, {"feats": feats, "feats_lengths": lengths})
        n = int(enc_lengths[0])
        return enc[0, :n], logp[0, :n]

    def __call__(self, speech: np.ndarray) -> List[Tuple[Optional[str], List[str], List[int], Hypothesis]]:
        enc, logp = self.encode(speech)
        if self.lexicon_decoder is not None:
            results = []
            for words, token_int, score in self.lexicon_decoder(torch.from_numpy(logp)):
                hyp = Hypothesis(yseq=torch.tensor([self.sos, *token_int, self.eos]), score=score)
                results.append((" ".join(words), self.converter.ids2tokens(token_int), token_int, hyp))
            return results
        if self.ctc_greedy:
            token_int = collapse_ctc(logp.argmax(-1).tolist(), self.blank_id, (self.sos, self.eos))
            hyp = Hypothesis(yseq=torch.tensor([self.sos, *token_int, self.eos]), score=0.0)
            hyps = [hyp]
        else:
            self.posteriors.logp = torch.from_numpy(logp).unsqueeze(0)
            if self.decoder is not None:
                self.decoder.set_utterance(enc)
            with torch.no_grad():
                hyps = self.beam_search(x=torch.from_numpy(enc), maxlenratio=self.maxlenratio,
                                        minlenratio=self.minlenratio)[: self.nbest]
        results = []
        for hyp in hyps:
            last = None if hyp.yseq[-1].item() != self.eos or len(hyp.yseq) < 2 else -1
            token_int = [t for t in hyp.yseq[1:last].tolist() if t != self.blank_id]
            tokens = self.converter.ids2tokens(token_int)
            results.append((self.tokenizer.tokens2text(tokens), tokens, token_int, hyp))
        logging.info("best hypo: " + (results[0][0] if results else ""))
        return results
