# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · The compression trade-off: LDM-1 to LDM-32 at equal steps
#
# **By the end of this notebook you will** have compared latent diffusion models that differ only in the
# downsampling factor $f$ of their first stage (pixel space $f=1$ up to $f=32$), each with a UNet of the same
# parameter count trained for the same number of steps, as the paper's §4.1 does, and seen what it measures: how
# fast each one learns per step, what a step and a sample cost, and where the first stage starts to cost quality.
# Then the same models at equal *compute*, the second view.
#
# *Paper:* Rombach et al., CVPR 2022, §4.1 (Fig. 6: quality during training for LDM-{1,2,4,8,16,32} against
# training steps; Fig. 7: quality vs sampling throughput at DDIM 10/20/50/100; the claim that $f = 4$ to $8$
# balances efficiency and fidelity) and Table 8 (the first stages and their latent channels $c$). The paper's
# Table 6 is §4.5's inpainting-efficiency table (LDM-1 vs LDM-4), shown at the end.
#
# *Time:* opens in seconds from the results committed under `benchmarks/results/` (made by `ldm-lite experiment
# tradeoff --protocol equal-steps|equal-compute`, hours of background compute on 2 shared CPU cores).
# `RUN_LIVE = True` reruns a small equal-steps sweep here (a few minutes on a laptop CPU).
#
# Every number below is read from the results files and printed with what it rests on: the image size, whether the
# first stages were trained alike, how many samples, and **which judge** scored "recognisable" (the old
# `shapes-classifier-32` calls pure noise a shape; `shapes-judge-32` does not, see `benchmarks/results/rejudge/`).

# %% tags=["parameters"]
# Parameters (the test-suite sets LDM_LITE_SMOKE=1 to shrink sizes)
import ldm_lite as ll
SMOKE = ll.runtime.smoke_mode()
DEVICE = ll.runtime.pick_device("auto")
RESULTS = ll.paths.REPO_ROOT / "benchmarks" / "results"   # the committed sweeps
RUN_LIVE = SMOKE          # True: run a small sweep in this notebook too (smoke mode always runs a tiny one)
LIVE_OUT = ll.paths.OUTPUTS_DIR / "nb07-tradeoff"

# %%
import json
import torch
from IPython.display import Markdown, display
from ldm_lite import plotting, tradeoff
# %matplotlib inline
torch.manual_seed(0);

# %% [markdown]
# ## 1 · One protocol, six first stages
#
# Every LDM-$f$ gets the autoencoder with the paper's latent channels for its $f$ (an identity "autoencoder" for
# $f=1$) and a UNet whose width is chosen so that all UNets have the same number of parameters (within 10%). The
# depth follows the latent: one UNet level per halving down to 4×4, attention where the feature map is 8×8 or
# smaller. So what differs is only *where* the diffusion model works, not how big it is. This is the headline
# protocol, `TradeoffConfig.equal_steps()`: 64×64 `shapes`, the same number of training steps and batch for every $f$.

# %%
cfg = tradeoff.TradeoffConfig.smoke() if SMOKE else tradeoff.TradeoffConfig.equal_steps()
print(f"{cfg.resolution}×{cfg.resolution}, {cfg.steps:,} steps of batch {cfg.batch_size} per model, "
      f"target {cfg.target_params:,} UNet parameters (±{cfg.param_tolerance:.0%}); first stages: {cfg.autoencoders}")
for f in cfg.fs:
    c, side = tradeoff.PAPER_LATENT_CHANNELS[f], cfg.resolution // f
    unet_cfg = tradeoff.matched_unet(c, side, cfg.target_params)
    n = tradeoff.count_parameters(ll.unet.UNet(unet_cfg))
    print(f"LDM-{f:<2}  latent {c}x{side}x{side}  width {unet_cfg.model_channels:>3}  "
          f"levels {len(unet_cfg.channel_mult)}  {n / 1e6:.2f} M parameters")

# %% [markdown]
# The first stages of this protocol were all trained with one loss, recipe and budget, so a larger $f$
# reconstructs worse *because of $f$*: their held-out reconstruction (the paper's Table 8, in miniature):

# %%
first_stages = RESULTS / "first_stages64.md"
if first_stages.exists():
    display(Markdown("\n".join(ln for ln in first_stages.read_text().splitlines() if ln.startswith("|"))
                     + f"\n\n*from `{first_stages.relative_to(ll.paths.REPO_ROOT)}` (512 held-out 64×64 images; "
                     "rFID on Inception features with 512 images is biased upward: compare rows, not with the paper)*"))

# %% [markdown]
# ## 2 · Equal steps: the headline (Fig. 6 and Fig. 7)
#
# The cell below loads the fair 64×64 sweep when it is committed (`benchmarks/results/tradeoff64/`), and otherwise
# the older 32×32 equal-steps sweep (`benchmarks/results/tradeoff_steps/`), whose first stages were *not* trained
# alike. It says which one you are looking at; every sentence after it is computed from that data.

# %%
REJUDGED = json.loads((RESULTS / "rejudge" / "results.json").read_text())
NEW_JUDGE = f"{REJUDGED['judge']} (noise-proof; commit {REJUDGED['judge_commit']})"
OLD_JUDGE = "old judge: shapes-classifier-32 alone, which calls saturated noise a shape"


def load_sweep(path):
    """(rows, config, run) of a committed sweep; rows: results.json (training and sampling rows)."""
    return tuple(json.loads((path / name).read_text()) for name in ("results.json", "config.json", "run.json"))


def rejudged_note(path):
    """The committed re-judging of the samples kept under `path` (scripts/rejudge.py), one phrase per f."""
    rel = str(path.relative_to(ll.paths.REPO_ROOT))
    hits = sorted(((int(k.split("/")[-2][1:]), v) for k, v in REJUDGED["tradeoff"].items() if k.startswith(rel + "/")))
    return "; ".join(f"LDM-{f} {100 * v['new']:.0f}% (was {100 * v['old']:.0f}%)" for f, v in hits), (
        hits[0][1]["n"] if hits else 0)


FAIR = RESULTS / "tradeoff64"
if (FAIR / "results.json").exists():
    STEPS = FAIR
    STEPS_CAVEAT = "64×64, the fair first stages (one loss, recipe and budget each)"
    STEPS_JUDGE = NEW_JUDGE
    display(Markdown(f"**Showing the fair 64×64 equal-steps sweep** (`{FAIR.name}/`)."))
else:
    STEPS = RESULTS / "tradeoff_steps"
    STEPS_CAVEAT = ("32×32, first stages UNEQUAL (trained with different budgets and losses: LDM-8's and LDM-16's "
                    "decoders cap their quality from the start)")
    STEPS_JUDGE = OLD_JUDGE
    display(Markdown("**Note: the fair 64×64 equal-steps run is not committed yet** (`benchmarks/results/tradeoff64/` "
                     "is missing; it is training in the background). Shown instead: the older equal-steps sweep "
                     f"`{STEPS.name}/` at **{STEPS_CAVEAT}**. Read its ranking of large $f$ as a statement about "
                     "those first stages, not about $f$."))
steps_rows, steps_config, steps_run = load_sweep(STEPS)
print(f"command: {steps_run['command']}\nmachine: {steps_run['machine']}\ndate:    {steps_run['date_utc']} UTC")

# %% [markdown]
# ### Throughput per f
#
# Training throughput (samples per second of training, on the clock named below), the measured FLOPs of a training
# step, sampling throughput with DDIM at several step counts, and the quality at the end of the equal number of
# steps: FID on the shapes classifier's features (lower is better) with a 90% bootstrap interval, and the share of
# samples the judge recognises as a clean shape. (The kit used to call this "Table 6"; the paper's Table 6 is the
# inpainting-efficiency table of §4.5, at the end of this notebook.)

# %%
def ends(rows):
    """{f: the last training row} (the quality at the end of the budget)."""
    out = {}
    for r in rows:
        if r["kind"] == "training" and r["step"] >= out.get(r["f"], {"step": -1})["step"]:
            out[r["f"]] = r
    return dict(sorted(out.items()))


def throughput_table(rows, judge):
    table = tradeoff.table6(rows)
    for row in table:
        if "recognisable" in row:
            row[f"recognisable ({judge.split(':')[0].split(' (')[0]})"] = row.pop("recognisable")
    return Markdown(ll.metrics.format_table(table))


def equal_budget_summary(rows, config, caveat, judge, budget):
    """The computed statements about one sweep: best FID, the order, the paper's direction, the judge's score."""
    end = ends(rows)
    fid = {f: r["fid"] for f, r in end.items()}
    best = min(fid, key=fid.get)
    n, clock = end[best]["n"], end[best].get("clock", "?")
    lines = [f"- At {budget} the lowest FID here is **LDM-{best}**: {fid[best]:.1f} (90% bootstrap "
             f"{end[best]['fid_lo']:.1f}–{end[best]['fid_hi']:.1f}; n = {n} samples against {config['n_real']:,} "
             f"held-out images; {caveat}).",
             "- FID from best to worst: " + " < ".join(f"LDM-{f} ({fid[f]:.0f})" for f in sorted(fid, key=fid.get)) + "."]
    good, bad = [f for f in (4, 8) if f in fid], [f for f in (1, 16, 32) if f in fid]
    if good and bad:
        holds = max(fid[f] for f in good) < min(fid[f] for f in bad)
        lines.append(f"- The paper's direction (LDM-{'/'.join(map(str, good))} better than "
                     f"LDM-{'/'.join(map(str, bad))}) **{'holds' if holds else 'does not hold'}** here"
                     + ("." if holds else ": " + ", ".join(f"LDM-{g} {fid[g]:.0f} vs LDM-{b} {fid[b]:.0f}" for g in good
                                                            for b in bad if fid[g] >= fid[b]) + ".")
                     + " This is an order only: read the FIDs above for how far apart they are.")
    if any(r["fid"] < r["fid_lo"] for r in end.values()):
        lines.append("- Some estimates lie below their interval: these intervals predate the bootstrap's bias "
                     "correction (`ll.evaluation.fid_bootstrap`) and are the raw percentiles of resampled FIDs, which "
                     "sit above the estimate because a resample repeats points; read their width, not their position.")
    lines.append("- Recognisable at the end (" + judge + f", n = {n} each): "
                 + ", ".join(f"LDM-{f} {100 * r['recognisable']:.1f}%" for f, r in end.items()) + ".")
    if 1 in end and 4 in end:
        lines.append(f"- LDM-4 trains {end[4]['train_samples_per_second'] / end[1]['train_samples_per_second']:.1f}× the "
                     f"samples/s of LDM-1 ({end[4]['train_samples_per_second']:.0f} vs "
                     f"{end[1]['train_samples_per_second']:.0f}, {clock}); the paper's Table 6 ratio is 0.32 / 0.11 = "
                     "2.9× (inpainting, §4.5).")
    return Markdown("\n".join(lines))


display(throughput_table(steps_rows, STEPS_JUDGE))
display(equal_budget_summary(steps_rows, steps_config, STEPS_CAVEAT, STEPS_JUDGE,
                             f"equal steps ({steps_config['steps']:,} of batch {steps_config['batch_size']})"))
if STEPS_JUDGE == OLD_JUDGE:
    note, n_kept = rejudged_note(STEPS)
    if note:
        display(Markdown(f"- Re-judged with {NEW_JUDGE} on the {n_kept} samples kept per model (the 256 judged in "
                         f"the sweep are not stored): {note}."))

# %% [markdown]
# ### Quality during training (Fig. 6)
#
# Read the left-hand panels: the same $x$ (steps) for every model, as in the paper's Fig. 6. The right-hand
# panels put the same points on the training-time axis: a step of a small $f$ costs more.

# %%
plotting.tradeoff_training(steps_rows, title=f"equal steps: quality during training ({STEPS_CAVEAT.split(' (')[0]})");

# %% [markdown]
# ### Quality vs sampling throughput (Fig. 7)
#
# Each line is one trained LDM-$f$ sampled with DDIM at the step counts written beside the points.

# %%
plotting.tradeoff_sampling(steps_rows);

# %%
def sampling_summary(rows):
    samp = [r for r in rows if r["kind"] == "sampling"]
    lines = []
    for s in sorted({r["sampler_steps"] for r in samp}):
        at = {r["f"]: r for r in samp if r["sampler_steps"] == s}
        best = min(at, key=lambda f: at[f]["fid"])
        lines.append(f"- DDIM-{s}: lowest FID LDM-{best} ({at[best]['fid']:.0f} at {at[best]['samples_per_second']:.1f} "
                     f"samples/s); fastest LDM-{max(at, key=lambda f: at[f]['samples_per_second'])}.")
    n = sorted({r["n"] for r in samp})
    lines.append(f"- n = {', '.join(map(str, n))} samples per point; FID is biased upward when n is small, so compare "
                 "points of this figure with each other, not with Fig. 6's.")
    return Markdown("\n".join(lines))


display(sampling_summary(steps_rows))

# %% [markdown]
# ## 3 · An f control over the trained models
#
# Move $f$: the samples of that model at the end of its steps, its latent, its measured cost of a training step and
# where its quality curve sits among the others.

# %%
def last_samples(path):
    """{f: the samples kept at the last evaluation} (the last checkpoint of each f wins)."""
    return {int(p.parent.name[1:]): tradeoff.load_samples(p) for p in sorted(path.glob("f*/samples_step*.safetensors"))}


display(ll.widgets.tradeoff_panel(steps_rows, last_samples(STEPS), batch_size=steps_config["batch_size"], x="step",
                                  judge=STEPS_JUDGE.split(",")[0], note=STEPS_CAVEAT))

# %% [markdown]
# ## 4 · The second view: equal compute
#
# Equal steps gives every model the same number of updates, whatever they cost, so a small $f$ spends far more
# compute on each: it is the setting least favourable to a large $f$. The committed equal-compute sweep turns it
# around: every LDM-$f$ gets the same training seconds (CPU time with one thread, so other programs do not distort
# it), so a cheap large-$f$ step buys many more updates.

# %%
COMPUTE = RESULTS / "tradeoff"
COMPUTE_CAVEAT = "32×32, first stages UNEQUAL (different budgets and losses)"
compute_rows, compute_config, compute_run = load_sweep(COMPUTE)
print(f"command: {compute_run['command']}\nmachine: {compute_run['machine']}\ndate:    {compute_run['date_utc']} UTC")
display(throughput_table(compute_rows, OLD_JUDGE))
display(equal_budget_summary(compute_rows, compute_config, COMPUTE_CAVEAT, OLD_JUDGE,
                             f"equal compute ({compute_config['budget_seconds']:.0f} s per model)"))
note, n_kept = rejudged_note(COMPUTE)
display(Markdown(f"- Re-judged with {NEW_JUDGE} on the {n_kept} samples kept per model: {note}."))
plotting.tradeoff_training(compute_rows, title=f"equal compute: quality during training ({COMPUTE_CAVEAT})");

# %% [markdown]
# ## 5 · A small sweep, live
#
# The same function that made the committed results, at a size that fits a notebook: three $f$, smaller UNets,
# 32×32 images on the shipped 32×32 first stages (trained unequally, as in the old sweeps), a few hundred steps.
# It is resumable: run the cell again and it continues where it stopped.

# %%
if RUN_LIVE:
    live_cfg = (tradeoff.TradeoffConfig.smoke() if SMOKE else
                tradeoff.TradeoffConfig(fs=(1, 4, 16), budget="steps", steps=150, batch_size=16,
                                        target_params=580_000, eval_points=2, n_eval=128, n_sampling=64,
                                        sampling_steps=(10, 50)))
    live = tradeoff.run_tradeoff(live_cfg, LIVE_OUT, device=DEVICE)
    display(Markdown(ll.metrics.format_table(tradeoff.table6(live))))
    display(equal_budget_summary(live, {"n_real": live_cfg.n_real},
                                 f"{live_cfg.resolution}×{live_cfg.resolution}, shipped first stages, a toy budget",
                                 NEW_JUDGE, f"equal steps ({live_cfg.steps} of batch {live_cfg.batch_size})"))
    plotting.tradeoff_training(live, title="live sweep: quality during training");

# %% [markdown]
# The live models are on disk (`LIVE_OUT/f<f>/ldm/model`): load them and sample afresh, then switch between them.

# %%
if RUN_LIVE:
    models = {f: ll.ldm.LatentDiffusion.from_pretrained(LIVE_OUT / f"f{f}" / "ldm" / "model", map_location=DEVICE)
              for f in live_cfg.fs}
    fresh = {f: m.sample(8, steps=20, generator=torch.Generator().manual_seed(1)).cpu() for f, m in models.items()}
    display(ll.widgets.tradeoff_panel(live, fresh, batch_size=live_cfg.batch_size, x="step",
                                      judge=NEW_JUDGE.split(" (")[0], note="the live sweep: a toy budget"))

# %% [markdown]
# ## 6 · Your turn: what a convolution costs
#
# The exercises are checked by `ldm_lite.exercises` (`ex`): each `ex.check_<name>(fn)` runs your function on the
# cases it lists and prints ✓ or ✗ with the failing case, expected vs got and a hint naming the likely mistake. An
# unsolved stub only prints a note. Hints are hidden until you ask: `ex.hint("<name>")` in a cell shows the first of
# three (where it is in the paper, then the formula, then the detail that usually goes wrong in code), each further
# call the next.
#
# **7.1 · The FLOPs of a convolution.** Why is LDM-1 so much more expensive per step? Count it: write the FLOPs of
# one k×k convolution from `c_in` to `c_out` channels on an `h_out`×`w_out` output (2 FLOPs per multiply-add, as
# torch's `FlopCounterMode` counts). `ex.check_conv2d_flops` checks it on the UNet's convolutions, then prices each
# LDM-$f$'s first convolution at 64×64 with your formula and measures each whole matched UNet beside it: compare the
# ratios it prints with the GFLOPs column of the throughput tables above. Stuck? `ex.hint("conv2d_flops")`.

# %%
from ldm_lite import exercises as ex


def conv2d_flops(c_in, c_out, kernel, h_out, w_out):
    """FLOPs of one kernel x kernel convolution without bias (2 per multiply-add)."""
    raise NotImplementedError("your turn: replace this line with your code")

# %%
ex.check_conv2d_flops(conv2d_flops);

# %% [markdown]
# ## 7 · The paper's Table 6: inpainting efficiency
#
# §4.5 trains LDM-1 and LDM-4 for inpainting at the same budget and reports training throughput 0.11 vs 0.32
# samples/s and FID 24.74 vs 15.21 (Table 6). The kit's version is made by
# `benchmarks/inpainting_efficiency.py`.

# %%
table6_path = RESULTS / "inpainting_efficiency.md"
if table6_path.exists():
    display(Markdown(table6_path.read_text()))
else:
    print(f"not committed yet: {table6_path.relative_to(ll.paths.REPO_ROOT)} (python benchmarks/inpainting_efficiency.py)")

# %% [markdown]
# ## Exercises
#
# - **7.2** Switch the live sweep to equal *compute*: `TradeoffConfig(budget="time", budget_seconds=...)`. Which $f$
#   is best now? Explain with the GFLOPs per step why equal steps is the setting least favourable to a large $f$,
#   and equal compute the one least favourable to a small $f$.
# - **7.3** No LDM-$f$ can beat its autoencoder's reconstructions. Compute the FID of each first stage's
#   reconstructions on the classifier's features (`ll.compression.reconstruction_table` with the features of
#   `ll.evaluation.classifier_features`) and mark it on Fig. 6 as a floor for each $f$. Which models are at their floor?
# - **7.4** Double `steps` for the live sweep. Does the gap between LDM-1 and LDM-4 shrink or grow? Relate your
#   answer to the paper's remark that LDM-1 needs "significantly larger training times".
# - **7.5** In Fig. 7, which $f$ gives the best quality at a fixed sampling throughput of your choice? Is it the $f$
#   with the lowest FID at equal steps?
# - **7.6** Re-score the kept samples of the section-3 panel with the old classifier
#   (`ll.classifier.ShapesClassifier.from_pretrained(ll.paths.PRETRAINED_DIR / "shapes-classifier-32")`) and with the
#   judge (`ll.recipes.get_classifier()`), both through `ll.classifier.shapes_score`. Which samples do they disagree
#   on, and what do those look like?
