"""Results table of all-in-one subnets in the shape of the paper's Tables 1-4: the report model
(:class:`System` rows, :class:`Report`), WER / RTF / MAPSSWE scoring, and the Markdown, CSV and plot
builders of :mod:`espnet_allinone.bin.report`.

A system's hypotheses are ``<dir>/<set>/text`` (RTF: ``<dir>/<set>/rtf`` or asr.sh's
``logdir/calculate_rtf.log``); references ``<data_dir>/text``, or with ``scoring="hub5"``
``<data_dir>/{stm,glm}`` scored by NIST ``hubscr.pl -h hub5``.
"""

import csv
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from typeguard import typechecked

from espnet_allinone.scoring import hub5
from espnet_allinone.scoring.mapsswe import mapsswe_from_segments, matched_segments
from espnet_allinone.scoring.wer import WER, read_text, resolve_backend, score_files
from espnet_allinone.subnet import Subnet
from espnet_allinone.train_log import train_seconds

PathLike = Union[str, Path]
ALPHA = 0.05
AVG = "avg"
SCORINGS = ("text", "hub5")
_RTF_LINE = re.compile(r"^RTF:\s*([0-9.eE+-]+)", re.MULTILINE)
# Paper: blue / yellow cell = better than / no different from the baseline (Sys. 0);
# * / dagger = better than / no different from the separately trained twin.
MARK_BASELINE = {"better": "⁺", "same": "⁼", "worse": ""}
MARK_TWIN = {"better": "*", "same": "†", "worse": ""}
LEGEND = (
    "Marks (MAPSSWE, alpha = {alpha}, two-sided; the paper's convention): "
    "`⁺` significantly better than the baseline (the paper's blue cells), `⁼` no significant "
    "difference from the baseline (yellow cells); `*` significantly better than the separately "
    "trained system of the same architecture, `†` no significant difference from it. Where a "
    "baseline or a twin was given, a missing mark means significantly worse. Avg.: WER pooled "
    "over all sets (errors / reference words), its marks "
    "from the segments of all sets. Compression ratio: 32-bit storage of the largest encoder "
    "over the subnet's storage, counted as in the paper's Tables 2 and 4 (every parameter of a "
    "quantized block at the subnet's bit-width); enc. size: that storage in MB (1e6 bytes). "
    "RTF: decoding time / audio time. WER scored by {backend}."
)


@dataclass
class System:
    """One row: an architecture decoded by one (all-in-one, separate or baseline) system."""

    sys_id: str
    arch: Subnet
    kind: str  # "baseline" | "separate" | "allinone"
    label: str = ""
    use_kl: Optional[bool] = None
    params: int = 0
    size_mb: float = 0.0
    ratio: float = 1.0
    train_time: Optional[float] = None
    hyp_dirs: Dict[str, Path] = field(default_factory=dict)
    wer: Dict[str, Optional[WER]] = field(default_factory=dict)
    rtf: Optional[float] = None
    vs_baseline: Dict[str, str] = field(default_factory=dict)
    vs_twin: Dict[str, str] = field(default_factory=dict)
    never_trained: List[str] = field(default_factory=list)  # what the subnet uses that training never set


def _verdict(segs: List[Tuple[int, int]]) -> str:
    """better / same / worse of system a (first) against b."""
    result = mapsswe_from_segments(segs, ALPHA)
    return {"a": "better", "b": "worse", None: "same"}[result.better]


def _check_trained(encoder, arch, allow_untrained: bool) -> List[str]:
    """What ``arch`` computes with that training never set, in the weights of ``asr_model_file`` (pass
    the recalibrated model file when statistics were recalibrated; ``other_allinone`` models come
    without weights and are not checked); an error unless ``allow_untrained`` (its row is then reported
    with a note)."""
    parts = encoder.never_trained(arch)
    if parts and not allow_untrained:
        encoder.check_trained(arch)  # the error, naming the parts and the ways out
    return parts


def untrained_note(systems: List[System]) -> str:
    """A note naming the rows whose subnet computes with never-trained state (--allow_untrained)."""
    rows = [s for s in systems if s.never_trained]
    if not rows:
        return ""
    return "\n".join(f"- {s.sys_id} ({s.arch}) computes with state training never set (reported with "
                     f"--allow_untrained): {'; '.join(s.never_trained[:3])}"
                     + (f"; and {len(s.never_trained) - 3} more" if len(s.never_trained) > 3 else "")
                     for s in rows) + "\n"


def _load_encoder(config: PathLike, model_file: Optional[PathLike]):
    from espnet2.tasks.asr import ASRTask

    model, _ = ASRTask.build_model_from_file(config, model_file, "cpu")
    return model


def _size(encoder, arch: Subnet) -> Tuple[int, float, float]:
    size = encoder.subnet_size(arch)
    return size.params, size.paper_bits / 8 / 1e6, encoder.compression_ratio(arch)


def _bits(arch) -> str:
    """The bits column: the subnet's bit-width, or a layer-wise one's per-block bit-widths (e.g. 8/8/4/4)."""
    return str(arch.bits) if arch.is_uniform else "/".join(str(b) for _, b in arch.blocks)


def _subdirs(root: Path) -> List[Subnet]:
    specs = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            specs.append(Subnet.parse(d.name))
        except ValueError:
            continue  # not a subnet directory (e.g. logs)
    return sorted(specs, reverse=True)  # largest first, as the subnet spaces


def build_systems(
    asr_train_config: PathLike, asr_model_file: PathLike, decode_dir: PathLike, sets: List[str],
    label: Optional[str] = None, other_allinone: Sequence[str] = (), separate_decode_dir: Optional[PathLike] = None,
    layerwise: Sequence[str] = (), baseline_decode_dir: Optional[PathLike] = None, baseline_name: Optional[str] = None,
    train_times: Optional[PathLike] = None, allow_untrained: bool = False,
) -> List[System]:
    """Baseline, separate systems, other all-in-one models, then the main model (:class:`Report`'s
    arguments); ValueError for inconsistent labels or a decoded never-trained subnet."""
    model = _load_encoder(asr_train_config, asr_model_file)
    encoder = model.encoder
    times = json.loads(Path(train_times).read_text()) if train_times else {}
    models = []  # (label, model, decode_dir)
    for other in other_allinone:
        other_label, config, other_dir = other.split(":", 2)
        models.append((other_label, _load_encoder(config, None), Path(other_dir)))
    if label is None:  # the paper's letters: K with the KL term, A without
        label = "K" if getattr(model, "use_kl", False) else "A"
    models.append((label, model, Path(decode_dir)))
    # an all-in-one model's training time: --train_times, else its own ESPnet logs
    # (train.log beside its config.yaml, as asr.sh and the mini recipe keep them)
    configs = [other.split(":", 2)[1] for other in other_allinone] + [asr_train_config]
    for (lab, _, _), config in zip(models, configs):
        if lab not in times:
            seconds = train_seconds(Path(config).parent)
            if seconds is not None:
                times[lab] = seconds
    labels = [m[0] for m in models]
    if "" in labels or len(set(labels)) != len(labels):
        raise ValueError(f"all-in-one labels must be distinct and non-empty: {labels}")

    separate = _subdirs(Path(separate_decode_dir)) if separate_decode_dir else []
    # only the twins of this table's subnets (a decode dir may hold other tables' systems)
    spaces = {s for _, m, _ in models for s in m.encoder.subnet_space}
    skipped = [s.name for s in separate if s not in spaces]
    if skipped:
        logging.info(f"separate systems without a twin in this table, left out: {skipped}")
    separate = [s for s in separate if s in spaces]
    archs = spaces | set(separate)
    archs = sorted(archs, reverse=True)
    number = {a: str(i + 1) for i, a in enumerate(archs)}

    def dirs(root: Path) -> Dict[str, Path]:
        return {s: root / s for s in sets if (root / s / "text").exists()}

    systems = []
    if baseline_decode_dir:
        arch = Subnet.parse(baseline_name) if baseline_name else encoder.subnet_space.float_baseline
        params, mb, ratio = _size(encoder, arch)
        systems.append(System("0", arch, "baseline", params=params, size_mb=mb, ratio=ratio,
                              train_time=times.get("baseline"),
                              hyp_dirs=dirs(Path(baseline_decode_dir))))
    for arch in separate:
        params, mb, ratio = _size(encoder, arch)
        systems.append(System(number[arch], arch, "separate", params=params, size_mb=mb,
                              ratio=ratio, train_time=times.get(arch.name),
                              hyp_dirs=dirs(Path(separate_decode_dir) / arch.name)))
    for label, m, root in models:
        for arch in m.encoder.subnet_space:
            params, mb, ratio = _size(m.encoder, arch)
            systems.append(System(f"{number[arch]}{label}", arch, "allinone", label=label,
                                  use_kl=getattr(m, "use_kl", None), params=params, size_mb=mb,
                                  ratio=ratio, train_time=times.get(label),
                                  hyp_dirs=dirs(root / arch.name)))
            if m is model and systems[-1].hyp_dirs:  # the model whose weights were loaded
                systems[-1].never_trained = _check_trained(m.encoder, arch, allow_untrained)
    for i, name in enumerate(layerwise):  # searched layer-wise subnets of the main model
        label, m, root = models[-1]
        arch = m.encoder.subnet_space.get(name)
        params, mb, ratio = _size(m.encoder, arch)
        systems.append(System(f"L{i + 1}{label}", arch, "allinone", label=label, use_kl=getattr(m, "use_kl", None),
                              params=params, size_mb=mb, ratio=ratio, train_time=times.get(label),
                              hyp_dirs=dirs(root / arch.name),
                              never_trained=_check_trained(m.encoder, arch, allow_untrained)))
    return systems


def read_rtf(hyp_dir: Path) -> Optional[float]:
    """RTF of one decoded set: ``<dir>/rtf`` (:mod:`espnet_allinone.decode`) or the
    ``RTF: 0.071`` line of asr.sh's ``<dir>/logdir/calculate_rtf.log``; None if neither."""
    if (hyp_dir / "rtf").exists():
        return float((hyp_dir / "rtf").read_text())
    log = hyp_dir / "logdir" / "calculate_rtf.log"
    if log.exists():
        m = _RTF_LINE.search(log.read_text(errors="replace"))
        if m is not None:
            return float(m.group(1))
    return None


def score_systems(
    systems: List[System], data_dirs: List[Path], backend: str, scoring: str = "text"
) -> None:
    """WER per set and pooled, RTF, and MAPSSWE verdicts, in place.

    scoring: ``text`` (``<data_dir>/text`` with ``backend``) or ``hub5`` (hubscr.pl against
    ``<data_dir>/stm`` with its ``glm``; MAPSSWE on the filtered, GLM-mapped words).
    """
    if scoring not in SCORINGS:
        raise ValueError(f"unknown scoring {scoring!r}: use one of {', '.join(SCORINGS)}")
    sets = [d.name for d in data_dirs]
    refs = {d.name: read_text(d / "text") for d in data_dirs}
    hyps = {s.sys_id: {x: read_text(p / "text") for x, p in s.hyp_dirs.items()} for s in systems}
    if scoring == "hub5":
        glms = {d.name: d / "glm" for d in data_dirs}
        refs = {x: hub5.normalize_texts(r, glms[x]) for x, r in refs.items()}
        hyps = {k: {x: hub5.normalize_texts(h, glms[x]) for x, h in v.items()}
                for k, v in hyps.items()}
    for s in systems:
        for d in data_dirs:
            hyp = s.hyp_dirs.get(d.name)
            if hyp is None:
                s.wer[d.name] = None
            elif scoring == "hub5":
                s.wer[d.name] = hub5.score_hub5(d, hyp / "text", hyp / "score_hub5").wer
            else:
                s.wer[d.name] = score_files(d / "text", hyp / "text", backend)
        done = [w for w in s.wer.values() if w is not None]
        s.wer[AVG] = None
        if len(done) == len(sets):
            s.wer[AVG] = WER(errors=sum(w.errors for w in done), words=sum(w.words for w in done),
                             sentences=sum(w.sentences for w in done))
        rtfs = [r for r in map(read_rtf, s.hyp_dirs.values()) if r is not None]
        s.rtf = sum(rtfs) / len(rtfs) if rtfs else None

    def compare(a: System, b: System) -> Dict[str, str]:
        ha, hb = hyps[a.sys_id], hyps[b.sys_id]
        common = [x for x in sets if x in ha and x in hb]
        segs = {x: matched_segments(refs[x], ha[x], hb[x]) for x in common}
        out = {x: _verdict(segs[x]) for x in common}
        if len(common) == len(sets):
            out[AVG] = _verdict([seg for x in common for seg in segs[x]])
        return out

    baseline = next((s for s in systems if s.kind == "baseline"), None)
    twins = {s.arch: s for s in systems if s.kind == "separate"}
    for s in systems:
        if baseline is not None and s is not baseline:
            s.vs_baseline = compare(s, baseline)
        if s.kind == "allinone" and s.arch in twins:
            s.vs_twin = compare(s, twins[s.arch])


def _hours(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 60:.1f}min" if seconds >= 60 else f"{seconds:.0f}s"


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 100_000 else f"{n / 1e3:.1f}k"


def _yes_no(v: Optional[bool]) -> str:
    return "-" if v is None else ("✓" if v else "✗")


def markdown(systems: List[System], sets: List[str]) -> str:
    head = ["Sys.", "Architecture", "All-in-one", "+KL", "#Params enc.", "bits", "enc. size [MB]",
            "Training time", "Compression ratio"]
    head += [f"WER {s} [%]" for s in sets] + ["Avg. [%]", "RTF"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    seen_labels = set()
    for s in systems:
        first_of_block = s.kind != "allinone" or s.label not in seen_labels
        seen_labels.add(s.label)
        arch = f"{s.arch} (baseline)" if s.kind == "baseline" else str(s.arch)
        cells = [s.sys_id, arch, _yes_no(s.kind == "allinone" if s.kind != "baseline" else None),
                 _yes_no(s.use_kl) if s.kind == "allinone" else "-",
                 _count(s.params) if first_of_block else f"share ({_count(s.params)})",
                 _bits(s.arch), f"{s.size_mb:.2f}" if s.size_mb >= 1 else f"{s.size_mb:.3g}",
                 _hours(s.train_time) if first_of_block else "", f"{s.ratio:.2f}x"]
        for key in sets + [AVG]:
            w = s.wer.get(key)
            if w is None:
                cells.append("-")
                continue
            mark = MARK_BASELINE[s.vs_baseline[key]] if key in s.vs_baseline else ""
            mark += MARK_TWIN[s.vs_twin[key]] if key in s.vs_twin else ""
            cells.append(f"{w.wer:.{2 if key == AVG else 1}f}{mark}")
        cells.append("-" if s.rtf is None else f"{s.rtf:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary(systems: List[System]) -> str:
    """The paper's overall figures: all-in-one model vs the separate systems it replaces."""
    separate = [s for s in systems if s.kind == "separate"]
    if not separate:
        return ""
    out = []
    sep_params = sum(s.params for s in separate)
    sep_time = None
    if all(s.train_time is not None for s in separate):
        sep_time = sum(s.train_time for s in separate)
    for label in dict.fromkeys(s.label for s in systems if s.kind == "allinone"):
        block = [s for s in systems if s.kind == "allinone" and s.label == label]
        covered = {s.arch for s in block} & {s.arch for s in separate}
        line = (f"- all-in-one {label}: {len(block)} systems in {_count(block[0].params)} encoder "
                f"parameters; the {len(separate)} separately trained systems hold "
                f"{_count(sep_params)} ({sep_params / block[0].params:.2f}x)")
        if sep_time is not None and block[0].train_time:
            line += (f"; training {_hours(block[0].train_time)} against {_hours(sep_time)} "
                     f"in total ({sep_time / block[0].train_time:.2f}x speed-up)")
        out.append(line + f"; {len(covered)} architectures have a separately trained twin.")
    return "\n".join(out) + "\n"


def csv_rows(systems: List[System], sets: List[str]) -> List[Dict]:
    rows = []
    for s in systems:
        row = {"sys": s.sys_id, "subnet": s.arch.name, "kind": s.kind, "label": s.label,
               "use_kl": s.use_kl, "params": s.params, "bits": _bits(s.arch), "size_mb": s.size_mb,
               "ratio": s.ratio, "train_time_s": s.train_time}
        for key in sets + [AVG]:
            w = s.wer.get(key)
            row[f"wer_{key}"] = None if w is None else w.wer
            row[f"vs_baseline_{key}"] = s.vs_baseline.get(key)
            row[f"vs_separate_{key}"] = s.vs_twin.get(key)
        row["rtf"] = s.rtf
        rows.append(row)
    return rows


def plot(systems: List[System], path: Path) -> None:
    """Average WER against encoder size (log scale): each all-in-one model's subnets,
    the separate systems and the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: Dict[str, List[System]] = {}
    for s in systems:
        if s.wer.get(AVG) is not None:
            name = {"baseline": "baseline", "separate": "separately trained"}.get(
                s.kind, f"all-in-one {s.label}"
            )
            groups.setdefault(name, []).append(s)
    annotated = list(groups)[-1] if groups else None  # the main model: names once
    allinone_markers = iter("oD^vP<>")
    for name, members in groups.items():
        marker = {"baseline": "*", "separately trained": "s"}.get(name) or next(allinone_markers, "o")
        ax.scatter([s.size_mb for s in members], [s.wer[AVG].wer for s in members], marker=marker,
                   s=80 if name == "baseline" else 36, label=name)
        if name == annotated:
            for s in members:
                ax.annotate(s.arch.name, (s.size_mb, s.wer[AVG].wer), fontsize=7, rotation=-30,
                            textcoords="offset points", xytext=(2, -6), va="top")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("encoder size [MB] (log scale)")
    ax.set_ylabel("WER, all sets [%]")
    ax.set_title("WER vs encoder size")
    ax.grid(True, which="both", alpha=0.3)
    if groups:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass(frozen=True)
class WrittenReport:
    """What :meth:`Report.write` wrote: ``text`` (the table, summary and notes of ``RESULTS.md``) and
    the paths of ``RESULTS.md``, ``results.csv`` and ``wer_vs_size.png``."""

    text: str
    results_md: Path
    results_csv: Path
    plot: Path


class Report:
    """The results table of an all-in-one model's decoded subnets, with optional other all-in-one
    models, separately trained twins, a baseline and layer-wise subnets (``build_systems``'s rows).

    Args:
        asr_train_config, asr_model_file: the main all-in-one model (its weights are checked for
            never-trained state of every decoded subnet).
        decode_dir: ``<decode_dir>/<subnet>/<set>/text``.
        data_dirs: the test sets (``<data_dir>/text``; ``<set>`` is the dir's name).
        label: the model's letter (default: ``K`` with the KL term, ``A`` without).
        other_allinone: ``LABEL:TRAIN_CONFIG:DECODE_DIR`` of other all-in-one models of the space.
        separate_decode_dir: ``<dir>/<subnet>/<set>/text`` of separately trained systems.
        layerwise: layer-wise subnet names of the main model, decoded into ``decode_dir``.
        baseline_decode_dir, baseline_name: the float baseline's ``<dir>/<set>/text`` and architecture
            (default: the largest subnet at 32 bits).
        train_times: JSON ``{"<label | subnet | baseline>": seconds}``.
        allow_untrained: report decoded subnets computing with never-trained state, with a note.

    Raises ValueError for a malformed ``other_allinone``, inconsistent labels, or (unless
    ``allow_untrained``) a decoded subnet that computes with never-trained state.
    """

    @typechecked
    def __init__(
        self, asr_train_config: PathLike, asr_model_file: PathLike, decode_dir: PathLike,
        data_dirs: Sequence[PathLike], label: Optional[str] = None, other_allinone: Sequence[str] = (),
        separate_decode_dir: Optional[PathLike] = None, layerwise: Sequence[str] = (),
        baseline_decode_dir: Optional[PathLike] = None, baseline_name: Optional[str] = None,
        train_times: Optional[PathLike] = None, allow_untrained: bool = False,
    ):
        for other in other_allinone:
            if other.count(":") < 2 or not other.split(":", 1)[0]:
                raise ValueError(f"--other_allinone {other!r}: expected LABEL:TRAIN_CONFIG:DECODE_DIR")
        self.asr_model_file = asr_model_file
        self.data_dirs = [Path(d) for d in data_dirs]
        self.sets = [d.name for d in self.data_dirs]
        self.systems = build_systems(
            asr_train_config, asr_model_file, decode_dir, self.sets, label=label, other_allinone=other_allinone,
            separate_decode_dir=separate_decode_dir, layerwise=layerwise, baseline_decode_dir=baseline_decode_dir,
            baseline_name=baseline_name, train_times=train_times, allow_untrained=allow_untrained,
        )

    def write(self, out_dir: PathLike, wer_backend: str = "auto", scoring: str = "text") -> WrittenReport:
        """Score the systems (:func:`score_systems`) and write ``RESULTS.md``, ``results.csv`` and
        ``wer_vs_size.png`` into ``out_dir``."""
        systems, sets = self.systems, self.sets
        backend = resolve_backend(wer_backend)
        score_systems(systems, self.data_dirs, backend, scoring)
        if scoring == "hub5":
            backend = "NIST hubscr.pl -h hub5 (stm, glm)"
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        table = markdown(systems, sets)
        (out / "RESULTS.md").write_text(
            f"# Results\n\nmodel: `{self.asr_model_file}`\n\n{table}\n{summary(systems)}{untrained_note(systems)}\n"
            + LEGEND.format(alpha=ALPHA, backend=backend) + "\n"
        )
        rows = csv_rows(systems, sets)
        with open(out / "results.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        plot(systems, out / "wer_vs_size.png")
        return WrittenReport(table + summary(systems) + untrained_note(systems), out / "RESULTS.md",
                             out / "results.csv", out / "wer_vs_size.png")
