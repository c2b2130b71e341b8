# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · The compression trade-off: LDM-1 to LDM-16 on one budget
#
# **By the end of this notebook you will** have compared latent diffusion models that differ only in the
# downsampling factor $f$ of their first stage (pixel space $f=1$ up to $f=16$), each with a UNet of the same
# parameter count and the same training compute, and seen what the paper's central experiment measures: how fast
# each one learns, how fast it samples, and where the first stage starts to cost quality.
#
# *Paper:* Rombach et al., CVPR 2022, §4.1 (Fig. 6: quality during training for LDM-{1,2,4,8,16,32}; Fig. 7:
# quality vs sampling throughput; the claim that $f = 4$ to $8$ balances efficiency and fidelity) and Table 8
# (the first stages and their latent channels $c$).
#
# *Time:* opens in seconds from the results committed under `benchmarks/results/tradeoff/` (made by
# `benchmarks/run_tradeoff.py`, about an hour of background compute on 2 shared CPU cores). `RUN_LIVE = True` reruns
# a small sweep here (about 5 minutes on a laptop CPU).

# %% tags=["parameters"]
# Parameters (the test-suite sets LDM_LITE_SMOKE=1 to shrink sizes)
import ldm_lite as ll
SMOKE = ll.runtime.smoke_mode()
DEVICE = ll.runtime.pick_device("auto")
RESULTS = ll.paths.REPO_ROOT / "benchmarks" / "results" / "tradeoff"   # the committed sweep
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
# ## 1 · One experiment, five first stages
#
# Every LDM-$f$ gets the autoencoder with the paper's latent channels for its $f$ (an identity "autoencoder" for
# $f=1$) and a UNet whose width is chosen so that all UNets have the same number of parameters (within 10%). The
# depth follows the latent: one UNet level per halving down to 4×4, attention where the feature map is 8×8 or
# smaller. So what differs is only *where* the diffusion model works, not how big it is.

# %%
cfg = tradeoff.TradeoffConfig.smoke() if SMOKE else tradeoff.TradeoffConfig()
print(f"target: {cfg.target_params:,} UNet parameters; first stages: {cfg.autoencoders}")
for f in cfg.fs:
    c = tradeoff.PAPER_LATENT_CHANNELS[f]
    unet_cfg = tradeoff.matched_unet(c, cfg.resolution // f, cfg.target_params)
    n = tradeoff.count_parameters(ll.unet.UNet(unet_cfg))
    print(f"LDM-{f:<2}  latent {c}x{cfg.resolution // f}x{cfg.resolution // f}  width {unet_cfg.model_channels:>3}  "
          f"levels {len(unet_cfg.channel_mult)}  {n / 1e6:.2f} M parameters")

# %% [markdown]
# ## 2 · The committed sweep
#
# `run.json` names the command, the machine and the date. The budget is the same *training compute* per model:
# the seconds per step of every LDM-$f$ are measured first, and each trains for (budget) / (seconds per step) steps.
# On a CPU the clock is the process's CPU time with one thread, so other programs on the machine do not distort it.

# %%
committed = tradeoff.collect(RESULTS) if (RESULTS / "config.json").exists() else []
if committed:
    print(json.dumps(json.loads((RESULTS / "run.json").read_text()), indent=1))
    display(Markdown((RESULTS / "table6.md").read_text()))
else:
    print(f"no committed results under {RESULTS}; set RUN_LIVE = True to make some here")

# %% [markdown]
# The table is the paper's Table 6 in miniature: training throughput (samples per second of training), sampling
# throughput with DDIM at several step counts, and the quality each model reached at the end of the equal budget
# (FID on the shapes classifier's features, lower is better, with a 90% bootstrap interval; and the share of
# samples the classifier recognises as a clean shape). The committed runs' intervals predate the bootstrap's bias
# correction (`ll.evaluation.fid_bootstrap`): they are the raw percentiles of resampled FIDs, which sit above the
# estimate because a resample repeats points; read their width, not their position.
#
# ### Quality during training (Fig. 6)

# %%
if committed:
    plotting.tradeoff_training(committed)

# %% [markdown]
# Read the right-hand panels: same $x$ (compute) for everyone. Pixel space spends its budget on few, expensive
# steps; large $f$ gets many cheap steps, but its first stage caps what the samples can look like.
#
# ### Quality vs sampling throughput (Fig. 7)

# %%
if committed:
    plotting.tradeoff_sampling(committed)

# %% [markdown]
# ### The other budget: equal steps
#
# The paper's Fig. 6 also reads along the step axis. A second, longer committed run gives every LDM-$f$ the same
# number of training steps instead of the same compute: pixel space now gets as many updates as the others, at
# many times their cost (`benchmarks/results/tradeoff_steps/README.md` says what it showed and how long it took).

# %%
RESULTS_STEPS = RESULTS.parent / "tradeoff_steps"
if (RESULTS_STEPS / "config.json").exists():
    display(Markdown((RESULTS_STEPS / "table6.md").read_text()))
    plotting.tradeoff_training(tradeoff.collect(RESULTS_STEPS), title="equal steps: quality during training")

# %% [markdown]
# ## 3 · An f control over the trained models
#
# Move $f$: the samples of that model at the end of its budget, its cost per training step, and where its quality
# curve sits among the others.

# %%
if committed:
    samples = {int(p.parent.name[1:]): tradeoff.load_samples(p)
               for p in sorted(RESULTS.glob("f*/samples_step*.safetensors"))}   # the last checkpoint of each f wins
    batch = json.loads((RESULTS / "config.json").read_text())["batch_size"]
    display(ll.widgets.tradeoff_panel(committed, samples, batch_size=batch))

# %% [markdown]
# ## 4 · A small sweep, live
#
# The same function that made the committed results, at a size that fits a notebook: fewer $f$, a smaller UNet,
# a shorter budget. It is resumable: run the cell again and it continues where it stopped.

# %%
if RUN_LIVE:
    live_cfg = (tradeoff.TradeoffConfig.smoke() if SMOKE else
                tradeoff.TradeoffConfig(fs=(1, 4, 16), target_params=580_000, budget_seconds=30, eval_points=2,
                                        n_eval=256, n_sampling=64, sampling_steps=(10, 50)))
    live = tradeoff.run_tradeoff(live_cfg, LIVE_OUT, device=DEVICE)
    display(Markdown(ll.metrics.format_table(tradeoff.table6(live))))
    plotting.tradeoff_training(live, title="live sweep: quality during training")

# %% [markdown]
# The live models are on disk (`LIVE_OUT/f<f>/ldm/model`): load them and sample afresh, then switch between them.

# %%
if RUN_LIVE:
    models = {f: ll.ldm.LatentDiffusion.from_pretrained(LIVE_OUT / f"f{f}" / "ldm" / "model", map_location=DEVICE)
              for f in live_cfg.fs}
    fresh = {f: m.sample(8, steps=20, generator=torch.Generator().manual_seed(1)).cpu() for f, m in models.items()}
    display(ll.widgets.tradeoff_panel(live, fresh, batch_size=live_cfg.batch_size))

# %% [markdown]
# ### Your turn: what a convolution costs
#
# Why is LDM-1 so much slower per step? Count it: write the FLOPs of one k×k convolution from `c_in` to `c_out`
# channels on an `h_out`×`w_out` output (2 FLOPs per multiply-add, as torch's `FlopCounterMode` counts).
# `ex.check_conv2d_flops` checks it on the UNet's convolutions and then prices LDM-f's first convolution for each f.
# An unsolved stub only prints a note.

# %%
from ldm_lite import exercises as ex


def conv2d_flops(c_in, c_out, kernel, h_out, w_out):
    """FLOPs of one kernel x kernel convolution without bias (2 per multiply-add)."""
    raise NotImplementedError("your turn: replace this line with your code")

# %%
ex.check_conv2d_flops(conv2d_flops);

# %% [markdown]
# ## Exercises
#
# 1. Switch to equal *steps* instead of equal compute: `TradeoffConfig(budget="steps", steps=...)` in the live
#    sweep. Which $f$ wins now, and why is this comparison unfair to the small-$f$ models in the other direction?
# 2. The committed FIDs of LDM-8 and LDM-16 can never beat their autoencoders' reconstructions. Compute the rFID of
#    each first stage (`ll.compression.reconstruction_table` with the classifier features of
#    `ll.evaluation.classifier_features`) and mark it on the Fig. 6 plot as a floor for each $f$.
# 3. Double `budget_seconds` for the live sweep. Does the gap between LDM-1 and LDM-4 shrink or grow? Relate your
#    answer to the paper's remark that LDM-1 needs "significantly larger training times".
# 4. In Fig. 7, which $f$ gives the best quality at a fixed sampling throughput of your choice? Is it the same $f$ that
#    wins at equal training compute?
