"""Checked exercises: the learner writes a piece of LDM, a check compares it with the library and, for most, then
runs it on real data or inside a shipped model.

    import ldm_lite as ll
    from ldm_lite import exercises as ex

    def q_sample(alpha_bar, z0, t, noise):          # a "your turn" cell: the learner replaces the raise
        raise NotImplementedError
    q_sample = ex.check_q_sample(q_sample).fn       # prints the verdict; .fn is yours if right, else the library's

Every `check_<name>(fn, demo=True) -> Verdict`:
- calls `fn` on the cases listed in its docstring (random tensors, real ones from the shipped models, edge cases
  such as t = 0 and t = T-1, η = 0 and 1, a single context token) and compares with the library's implementation;
- prints one verdict: ✓ with the cases it passed, or ✗ with the case that failed, expected vs got, and a hint naming
  the likely mistake (a missing square root, an off-by-one in t, keys and values from the wrong source...). A hint
  comes from re-running the typical wrong versions listed beside each check on the same inputs: the one whose
  output equals yours names your mistake; otherwise generic hints (shape, sign, a constant factor, NaN);
- when right and `demo=True`, runs `fn` once more and prints what it measured. The demos use the shipped
  checkpoints under `data/pretrained/` (the unconditional LDM's demos fall back to a small untrained stand-in and
  say so; the conditional ones print a note when their model is missing), e.g. images sampled with your DDIM step
  against `ll.samplers.ddim` from the same noise, your cross-attention in the shipped text model, your guidance in
  the shipped class-conditional MNIST model; `snr`'s works on the schedules alone and `conv2d_flops` prints what
  your formula gives for each f beside each matched UNet's FLOPs measured by torch's counter;
- returns a `Verdict` (truthy when passed). `verdict.fn` is the function to use from then on: yours when it
  passed, else the library's, so a notebook runs top to bottom with unsolved or wrong exercises (checking that
  handed-back library version again says so instead of passing).

Hints are hidden until asked for: `hint("<name>")` (`ex.hint("q_sample")` in a notebook) shows the first of an
exercise's three hints, each further call the next: where it is in the paper, the formula, the detail that usually
goes wrong in code (`ldm_lite.exercises.hints`).

A stub that still raises `NotImplementedError` is "not attempted": the check says so and falls back to the
library. In smoke mode (`LDM_LITE_SMOKE=1`, how the tests run the notebooks) it checks the reference solution from
`solutions/exercises.py` instead, so the check and its demo run end to end.

Checks (notebook: function to write; paper):
    00  to_model_range(img) -> (3, H, W)                        uint8 image (H, W, 3) -> float32 in [-1, 1]
    00  psnr(x, y) -> (B,)                                      PSNR in dB on images mapped to [0, 1]
    01  kl_sample(mean, logvar, noise) -> z                     reparameterised sample of q(z|x) (VAE)
    01  kl_divergence(mean, logvar) -> (B,)                     KL(q(z|x) || N(0, I)) per image
    01  vq_lookup(z_e, codebook) -> (z_q, indices)              nearest code + straight-through (VQ-VAE eq. 3)
    01  scale_factor(latents) -> float                          LDM's latent scale 1/std(z) (App. D.1)
    02  q_sample(alpha_bar, z0, t, noise) -> z_t                forward process (DDPM eq. 4)
    02  scaled_linear_alpha_bar(T, beta_start, beta_end) -> (T,)  LDM's √β-linear schedule, ᾱ_t = ∏(1 − β_s)
    02  snr(alpha_bar) -> (T,)                                  signal-to-noise ratio ᾱ/(1-ᾱ)
    03  ldm_loss(eps_model, alpha_bar, z0, t, noise) -> ()      L_LDM (LDM eq. 2)
    03  timestep_embedding(t, dim) -> (B, dim)                  sinusoidal time embedding
    03  resblock_forward(block, x, emb) -> (B, C_out, H, W)     a UNet ResBlock with its time injection
    03  attention(q, k, v) -> (B, h, N, d)                      softmax(QKᵀ/√d) V (LDM §3.3)
    03  attention_block(block, x) -> (B, C, H, W)               the UNet's self-attention block (norm, heads, residual)
    03  unet_forward(unet, x, t) -> ε̂ (B, C, H, W)              the whole UNet assembled from its parts
    04  predict_x0(alpha_bar, z_t, t, eps) -> ẑ_0               DDPM eq. 15
    04  ddim_step(z_t, eps, alpha_bar_t, alpha_bar_prev, eta, noise) -> z_prev   DDIM eq. 12 with σ(η) of eq. 16
    04  ddpm_step(z_t, eps, alpha_bar_t, alpha_bar_prev, noise) -> z_prev        DDPM Algorithm 2, posterior eq. 7
    04  cfg(eps_uncond, eps_cond, scale) -> ε̃                   classifier-free guidance
    05  cross_attention(x, context, w_q, w_k, w_v) -> (B, N, d) Q from the image, K/V from the context (LDM §3.3)
    06  sr_unet_input(z_t, lowres) -> (B, c + 3, h, w)          the UNet input of LDM super-resolution (concat, §3.3)
    06  inpaint_unet_input(z_t, x, mask, encode) -> (B, 2c + 1, h, w)  the UNet input of LDM inpainting (§4.5)
    06  keep_known(z_t, eps, alpha_bar_t, z_known, keep) -> ε̃   replacement sampling for inpainting (RePaint)
    07  conv2d_flops(c_in, c_out, kernel, h_out, w_out) -> int  the cost of a convolution, the unit of LDM-f's cost

Notebook 03 then builds the learner's own UNet from four of them: `UNetParts(timestep_embedding, resblock_forward,
attention_block, unet_forward)`, `build_unet(config, parts)` (a `LearnerUNet`, the skeleton of `ll.unet.UNet` whose
forward passes are the learner's, checked to load the library UNet's state_dict and predict its ε̂ within 1e-5).

Modules: `first_stage` (00, 01), `diffusion` (02, 04), `unet` (03, 07), `learner_unet` (03: the attention block and
the learner's UNet), `conditioning` (05, 06); `checking` holds the machinery (Verdict, cases, hints, real inputs).
"""

from __future__ import annotations

from .checking import Verdict
from .conditioning import check_cross_attention, check_inpaint_unet_input, check_keep_known, check_sr_unet_input
from .diffusion import (
           check_cfg,
           check_ddim_step,
           check_ddpm_step,
           check_predict_x0,
           check_q_sample,
           check_scaled_linear_alpha_bar,
           check_snr,
)
from .first_stage import (
           check_kl_divergence,
           check_kl_sample,
           check_psnr,
           check_scale_factor,
           check_to_model_range,
           check_vq_lookup,
)
from .hints import HINTS, hint
from .learner_unet import LearnerUNet, UNetParts, build_unet, check_attention_block
from .unet import (
           check_attention,
           check_conv2d_flops,
           check_ldm_loss,
           check_resblock_forward,
           check_timestep_embedding,
           check_unet_forward,
)

__all__ = ["Verdict",
           "hint",
           "HINTS",
           "check_to_model_range",
           "check_psnr",
           "check_kl_sample",
           "check_kl_divergence",
           "check_vq_lookup",
           "check_scale_factor",
           "check_q_sample",
           "check_scaled_linear_alpha_bar",
           "check_snr",
           "check_ldm_loss",
           "check_timestep_embedding",
           "check_resblock_forward",
           "check_attention",
           "check_attention_block",
           "UNetParts",
           "LearnerUNet",
           "build_unet",
           "check_unet_forward",
           "check_predict_x0",
           "check_ddim_step",
           "check_ddpm_step",
           "check_cfg",
           "check_cross_attention",
           "check_sr_unet_input",
           "check_inpaint_unet_input",
           "check_keep_known",
           "check_conv2d_flops",
]
