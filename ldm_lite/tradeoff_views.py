"""Reading the committed trade-off sweeps (notebook 07): which sweep to show, its caveats, and the statements about it
computed from its rows, so that every sentence stays true for whichever data is committed.

    sweep = headline_sweep(results_dir)           the fair 64x64 equal-steps sweep if committed, else the 32x32 one
    sweep = compute_sweep(results_dir)            the 32x32 equal-compute sweep (the second view)
    ends(rows)                                    {f: the last training row}
    summary(rows, n_real, caveat, judge, budget)  markdown: best FID, the order, the paper's direction, the judge's score
    sampling_summary(rows)                        markdown: per DDIM step count, the best FID and the fastest f
    throughput_table(rows, judge)                 markdown: throughput per f (the kit's old "Table 6"), judge named
    rejudged(rejudge, sweep_dir, repo_root)       markdown: the committed re-judging of the samples kept by a sweep
    last_samples(sweep_dir)                       {f: the samples kept at each f's last evaluation}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from .metrics import format_table

OLD_JUDGE = "old judge: shapes-classifier-32 alone, which calls saturated noise a shape"
UNEQUAL_32 = ("32×32, first stages UNEQUAL (trained with different budgets and losses: LDM-8's and LDM-16's decoders "
              "cap their quality from the start)")
FAIR_64 = "64×64, the fair first stages (one loss, recipe and budget each)"
PAPER_TABLE6 = "the paper's Table 6 ratio is 0.32 / 0.11 = 2.9× (inpainting, §4.5)"

__all__ = ["Sweep", "headline_sweep", "compute_sweep", "new_judge", "ends", "summary", "sampling_summary",
           "throughput_table", "rejudged", "last_samples", "OLD_JUDGE"]


@dataclass
class Sweep:
    """A committed sweep: its folder, rows (results.json), config.json, run.json, the caveat printed beside every
    number from it, the judge that scored its "recognisable", and whether it is the fair 64×64 headline run."""

    path: Path
    rows: list[dict]
    config: dict
    run: dict
    caveat: str
    judge: str
    fair: bool

    @property
    def provenance(self) -> str:
        return f"command: {self.run['command']}\nmachine: {self.run['machine']}\ndate:    {self.run['date_utc']} UTC"


def _load(path: Path, caveat: str, judge: str, fair: bool) -> Sweep:
    rows, config, run = (json.loads((path / name).read_text()) for name in ("results.json", "config.json", "run.json"))
    if not rows:
        raise ValueError(f"{path}/results.json has no rows; expected the rows of a trade-off sweep")
    return Sweep(path, rows, config, run, caveat, judge, fair)


def new_judge(rejudge: dict) -> str:
    """The noise-proof judge's label from `benchmarks/results/rejudge/results.json`."""
    return f"{rejudge['judge']} (noise-proof; commit {rejudge['judge_commit']})"


def headline_sweep(results: str | Path, rejudge: dict) -> Sweep:
    """`results/tradeoff64` (64×64, fair first stages, judged by the noise-proof judge) when its results.json is
    committed, else `results/tradeoff_steps` (32×32, unequal first stages, the old judge)."""
    results = Path(results)
    if (results / "tradeoff64" / "results.json").exists():
        return _load(results / "tradeoff64", FAIR_64, new_judge(rejudge), True)
    return _load(results / "tradeoff_steps", UNEQUAL_32, OLD_JUDGE, False)


def compute_sweep(results: str | Path) -> Sweep:
    """`results/tradeoff`: the same CPU seconds per LDM-f at 32×32 (unequal first stages, the old judge)."""
    return _load(Path(results) / "tradeoff", "32×32, first stages UNEQUAL (different budgets and losses)",
                 OLD_JUDGE, False)


def ends(rows: Sequence[dict]) -> dict[int, dict]:
    """{f: the last training row} (the quality at the end of the budget), sorted by f."""
    out: dict[int, dict] = {}
    for r in rows:
        if r["kind"] == "training" and r["step"] >= out.get(r["f"], {"step": -1})["step"]:
            out[r["f"]] = r
    return dict(sorted(out.items()))


def _judge_short(judge: str) -> str:
    return judge.split(":")[0].split(" (")[0]


def throughput_table(rows: Sequence[dict], judge: str) -> str:
    """Throughput per f (`tradeoff.table6`, the kit's old "Table 6") with the judge named in its score's column."""
    from .tradeoff import table6  # local: tradeoff imports the training stack

    table = table6(rows)
    for row in table:
        if "recognisable" in row:
            row[f"recognisable ({_judge_short(judge)})"] = row.pop("recognisable")
    return format_table(table)


def summary(rows: Sequence[dict], n_real: int, caveat: str, judge: str, budget: str) -> str:
    """Markdown bullets computed from a sweep's rows: the lowest FID at the end (its interval, n and caveat), the
    order, whether the paper's direction (LDM-4/8 better than LDM-1/16/32) holds, the judge's score per f, and
    LDM-4's training throughput over LDM-1's beside the paper's Table 6 ratio."""
    end = ends(rows)
    if not end:
        raise ValueError("summary needs training rows (kind 'training'); got none")
    fid = {f: r["fid"] for f, r in end.items()}
    best = min(fid, key=fid.get)
    n, clock = end[best]["n"], end[best].get("clock", "?")
    lines = [f"- At {budget} the lowest FID here is **LDM-{best}**: {fid[best]:.1f} (90% bootstrap "
             f"{end[best]['fid_lo']:.1f}–{end[best]['fid_hi']:.1f}; n = {n} samples against {n_real:,} held-out "
             f"images; {caveat}).",
             "- FID from best to worst: " + " < ".join(f"LDM-{f} ({fid[f]:.0f})" for f in sorted(fid, key=fid.get)) + "."]
    good, bad = [f for f in (4, 8) if f in fid], [f for f in (1, 16, 32) if f in fid]
    if good and bad:
        holds = max(fid[f] for f in good) < min(fid[f] for f in bad)
        misses = ", ".join(f"LDM-{g} {fid[g]:.0f} vs LDM-{b} {fid[b]:.0f}" for g in good for b in bad if fid[g] >= fid[b])
        lines.append(f"- The paper's direction (LDM-{'/'.join(map(str, good))} better than LDM-{'/'.join(map(str, bad))}) "
                     f"**{'holds' if holds else 'does not hold'}** here" + ("" if holds else f" ({misses})")
                     + ". This is an order only: the FIDs above say how far apart they are.")
    if any(r["fid"] < r["fid_lo"] for r in end.values()):
        lines.append("- Some estimates lie below their interval: these intervals predate the bootstrap's bias "
                     "correction (`ll.evaluation.fid_bootstrap`) and are the raw percentiles of resampled FIDs, which "
                     "sit above the estimate because a resample repeats points; read their width, not their position.")
    lines.append(f"- Recognisable at the end ({judge}, n = {n} each): "
                 + ", ".join(f"LDM-{f} {100 * r['recognisable']:.1f}%" for f, r in end.items()) + ".")
    if 1 in end and 4 in end:
        a, b = end[4]["train_samples_per_second"], end[1]["train_samples_per_second"]
        lines.append(f"- LDM-4 trains {a / b:.1f}× the samples/s of LDM-1 ({a:.0f} vs {b:.0f}, {clock}); {PAPER_TABLE6}.")
    return "\n".join(lines)


def sampling_summary(rows: Sequence[dict]) -> str:
    """Markdown bullets for Fig. 7: per DDIM step count the f with the lowest FID and the fastest f, and n."""
    samp = [r for r in rows if r["kind"] == "sampling"]
    if not samp:
        return "- no sampling rows in these results"
    lines = []
    for s in sorted({r["sampler_steps"] for r in samp}):
        at = {r["f"]: r for r in samp if r["sampler_steps"] == s}
        best = min(at, key=lambda f: at[f]["fid"])
        fastest = max(at, key=lambda f: at[f]["samples_per_second"])
        lines.append(f"- DDIM-{s}: lowest FID LDM-{best} ({at[best]['fid']:.0f} at {at[best]['samples_per_second']:.1f} "
                     f"samples/s); fastest LDM-{fastest} ({at[fastest]['samples_per_second']:.1f} samples/s).")
    n = sorted({r["n"] for r in samp})
    lines.append(f"- n = {', '.join(map(str, n))} samples per point; FID is biased upward when n is small, so compare "
                 "the points of this figure with each other, not with Fig. 6's.")
    return "\n".join(lines)


def rejudged(rejudge: dict, sweep_dir: str | Path, repo_root: str | Path) -> str:
    """The committed re-judging (`scripts/rejudge.py`) of the samples a sweep kept, as one markdown bullet; "" when
    none of them was re-judged."""
    rel = Path(sweep_dir).resolve().relative_to(Path(repo_root).resolve()).as_posix()
    hits = sorted((int(k.split("/")[-2][1:]), v) for k, v in rejudge.get("tradeoff", {}).items()
                  if k.startswith(rel + "/"))
    if not hits:
        return ""
    return (f"- Re-judged with {new_judge(rejudge)} on the {hits[0][1]['n']} samples kept per model (the samples "
            "judged in the sweep are not stored): "
            + "; ".join(f"LDM-{f} {100 * v['new']:.0f}% (was {100 * v['old']:.0f}%)" for f, v in hits) + ".")


def last_samples(sweep_dir: str | Path) -> dict[int, Tensor]:
    """{f: the samples kept at the last evaluation} (the last checkpoint of each f wins)."""
    from .tradeoff import load_samples

    return {int(p.parent.name[1:]): load_samples(p)
            for p in sorted(Path(sweep_dir).glob("f*/samples_step*.safetensors"))}
