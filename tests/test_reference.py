"""Faithful to the reference (CompVis latent-diffusion / taming-transformers) where a learner would be misled.

One test (or more) per item of the "faithful to the paper" issue; the reference's updates are transcribed here from
its code (`make_beta_schedule`, `make_ddim_timesteps`, `make_ddim_sampling_parameters`, `DDIMSampler.p_sample_ddim`,
`PLMSSampler.p_sample_plms`, taming's `VectorQuantizer2`) so the tests need neither package.
"""

from __future__ import annotations

import inspect
import json
import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

import ldm_lite as ll
from ldm_lite.attention import AttentionBlock, SpatialTransformer
from ldm_lite.autoencoder import Autoencoder, AutoencoderConfig, IdentityAutoencoder, VectorQuantizer
from ldm_lite.conditioning import ClassConditioner, ClassConditionerConfig, Condition
from ldm_lite.ldm import LatentDiffusion, ScaleFactorWarning
from ldm_lite.losses import AutoencoderLoss, AutoencoderLossConfig
from ldm_lite.paths import PRETRAINED_DIR
from ldm_lite.samplers import LDM_REFERENCE
from ldm_lite.schedule import Schedule
from ldm_lite.unet import ResBlock, UNet, UNetConfig

SHIPPED_LDM = PRETRAINED_DIR / "ldm-kl-f4-shapes32"


def tiny_unet(c=3, ctx=None):
    return UNet(UNetConfig(in_channels=c, out_channels=c, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                           attention_resolutions=(2,), head_dim=32, context_dim=ctx))


def tiny_ae(regularizer="kl", **kw):
    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig(base_channels=16, channel_mult=(1, 1, 1), norm_groups=8, regularizer=regularizer,
                                       codebook_size=16, **kw))  # f = 4
    ae.scale_factor.fill_(0.7)
    return ae.eval()


def images(n=4, res=16):
    ds = ll.datasets.shapes(res, n=n, seed=0)
    return torch.stack([ds[i]["image"] for i in range(n)])


# ------------------------------------------------------------------------------------------- 1. schedule bug
def test_custom_schedule_survives_train_save_load_sample(tmp_path):
    custom = Schedule.scaled_linear(T=200, beta_start=0.001, beta_end=0.03)
    ldm = LatentDiffusion(tiny_ae(), tiny_unet(), schedule=custom, image_size=16)
    torch.testing.assert_close(ldm.schedule.betas, custom.betas, rtol=0, atol=0)  # not rebuilt from a preset
    ll.train.train_ldm(ldm, ll.datasets.shapes(16, n=8, seed=0), steps=2, batch_size=4, warmup=0, device="cpu",
                       progress=False, ema=None)
    torch.testing.assert_close(ldm.schedule.betas, custom.betas, rtol=0, atol=0)
    ldm.save_pretrained(tmp_path / "m")
    stored = json.loads((tmp_path / "m" / "config.json").read_text())["config"]
    assert stored["T"] == 200 and stored["schedule_params"] == {"beta_start": 0.001, "beta_end": 0.03}
    back = LatentDiffusion.from_pretrained(tmp_path / "m")
    torch.testing.assert_close(back.schedule.betas, custom.betas, rtol=0, atol=0)
    seen = []
    loaded = back.sample(2, steps=4, generator=torch.Generator().manual_seed(0),
                         callback=lambda i, t, z, x0: seen.append(t))
    torch.testing.assert_close(loaded, ldm.sample(2, steps=4, generator=torch.Generator().manual_seed(0)))
    assert seen == [150, 100, 50, 0]  # T = 200 (the preset's 1000 would give 750, 500, ...)


def test_shipped_ldm_config_without_endpoints_keeps_0_00085_to_0_012(tmp_path):
    raw = json.loads((SHIPPED_LDM / "config.json").read_text())["config"]
    assert "schedule_params" not in raw  # written before endpoints were stored: must keep its old meaning
    ldm = LatentDiffusion.from_pretrained(SHIPPED_LDM)
    assert math.isclose(float(ldm.schedule.betas[0]), 0.00085) and math.isclose(float(ldm.schedule.betas[-1]), 0.012)
    assert ldm.config.schedule_params == {"beta_start": 0.00085, "beta_end": 0.012}
    ldm.save_pretrained(tmp_path / "again")  # re-saved: the endpoints are now written out and load the same
    torch.testing.assert_close(LatentDiffusion.from_pretrained(tmp_path / "again").schedule.betas, ldm.schedule.betas)


# ------------------------------------------------------------------------------------------- 2. the paper's β
def reference_make_beta_schedule_linear(T: int, linear_start: float, linear_end: float) -> np.ndarray:
    """CompVis `make_beta_schedule("linear", ...)`: linear in √β (what diffusers calls scaled_linear)."""
    return (np.linspace(linear_start**0.5, linear_end**0.5, T, dtype=np.float64) ** 2)


@pytest.mark.parametrize("end", [0.0195, 0.0155, 0.0205])
def test_ldm_presets_are_the_reference_configs_schedules(end):
    ours = Schedule.ldm(end)
    np.testing.assert_allclose(ours.betas.numpy(), reference_make_beta_schedule_linear(1000, 0.0015, end), rtol=1e-12)
    assert ours.name == "scaled_linear" and ours.params == {"beta_start": 0.0015, "beta_end": end}


def test_paper_and_stable_diffusion_side_by_side_and_the_default_chosen_on_purpose():
    paper, sd = Schedule.ldm(), Schedule.stable_diffusion()
    assert f"{float(paper.alpha_bar[-1]):.1e}" == "1.4e-04" and f"{float(sd.alpha_bar[-1]):.1e}" == "4.7e-03"
    np.testing.assert_allclose(sd.betas.numpy(), reference_make_beta_schedule_linear(1000, 0.00085, 0.012), rtol=1e-12)
    # the kit's default stays 0.00085 -> 0.012 (measured better on the main job: scripts/compare_beta_schedules.py)
    torch.testing.assert_close(Schedule.scaled_linear().betas, sd.betas)
    ldm = LatentDiffusion(tiny_ae(), tiny_unet(), image_size=16)
    torch.testing.assert_close(ldm.schedule.betas, sd.betas)
    assert ldm.config.schedule_params == {"beta_start": 0.00085, "beta_end": 0.012}  # written out explicitly
    with pytest.raises(ValueError, match="scaled_linear"):
        Schedule.ldm(0.02)  # not a reference value: the error names the general preset


# ------------------------------------------------------------------------------------------- 3. VQ latent
def test_vq_diffuses_the_latent_before_quantization_and_decoding_quantizes():
    ae, x = tiny_ae("vq"), images()
    with torch.no_grad():
        q = ae.encode(x)
        assert not torch.allclose(q.z_e, q.z_q)
        torch.testing.assert_close(ae.to_latent(x), q.z_e * 0.7)  # LDM diffuses z_e (VQModelInterface.encode)
        ldm = LatentDiffusion(ae, tiny_unet(), image_size=16)
        torch.testing.assert_close(ldm.encode(x), q.z_e * 0.7)
        torch.testing.assert_close(ae.decode(q.z_e), ae.decode(q.z_q))  # the decoder quantizes (VQModelInterface.decode)
        ae_q = tiny_ae("vq", vq_latent="quantized")  # the other way, as an option
        torch.testing.assert_close(ae_q.to_latent(x), ae_q.encode(x).z_q * 0.7)
    with pytest.raises(ValueError, match="pre_quant"):
        AutoencoderConfig.vq(vq_latent="z_q")


@pytest.mark.parametrize("legacy", [True, False])
def test_vq_beta_placement_matches_taming(legacy):
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 3, beta=0.25, dead_code_threshold=0.0, legacy=legacy).eval()
    z_e = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = vq(z_e)
    # taming VectorQuantizer2.forward: legacy puts β on the codebook term, legacy=False on the commitment term
    e = vq.codebook.weight
    z_q = vq.lookup(vq.nearest(z_e.detach()))
    commit, codebook = torch.mean((z_q.detach() - z_e) ** 2), torch.mean((z_q - z_e.detach()) ** 2)
    ref = commit + 0.25 * codebook if legacy else 0.25 * commit + codebook
    torch.testing.assert_close(out.loss, ref)
    g_ours = torch.autograd.grad(out.loss, [z_e, e], retain_graph=True)
    g_ref = torch.autograd.grad(ref, [z_e, e])
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b)
    assert Autoencoder(AutoencoderConfig.vq(vq_legacy=legacy)).quantizer.legacy is legacy


# ------------------------------------------------------------------------------------------- 4. KL log-variance
def test_kl_logvar_is_fixed_by_default_as_in_the_reference():
    loss = AutoencoderLoss(AutoencoderLossConfig(perceptual_weight=0))
    assert not loss.logvar.requires_grad and loss.generator_parameters() == []
    ae = tiny_ae()
    x = images(2)
    out = ae(x, generator=torch.Generator().manual_seed(0))
    value, _ = loss(x, out, step=0)
    rec = (x - out.sample).abs()  # s = 0: the nll is the plain per-image sum of L_rec
    torch.testing.assert_close(value, rec.sum() / 2 + 1e-6 * out.posterior.kl().mean())
    learned = AutoencoderLoss(AutoencoderLossConfig(perceptual_weight=0, learn_logvar=True))
    assert learned.generator_parameters() == [learned.logvar]  # the option stays
    # the recipes' presets follow the default, and the CLI can still reproduce the shipped (learned) models
    cfg = ll.recipes.config("ae")
    for loss in ("short", "full"):
        assert not ll.recipes.autoencoder_loss_config(replace(cfg, loss=loss)).learn_logvar
    assert ll.recipes.autoencoder_loss_config(replace(cfg, learn_logvar=True)).learn_logvar
    args = ll.cli.build_parser().parse_args(["train-ae", "--learn-logvar"])
    assert args.learn_logvar


# ------------------------------------------------------------------------------------------- 5. initialisation
def test_resblock_second_conv_and_self_attention_output_start_at_zero():
    torch.manual_seed(0)
    unet = tiny_unet()
    blocks = [m for m in unet.modules() if isinstance(m, ResBlock)]
    attns = [m for m in unet.modules() if isinstance(m, AttentionBlock)]
    assert blocks and attns
    assert not unet.conv_out.weight.any() and not unet.conv_out.bias.any()  # zero_module(conv_nd(...)) of `out`
    for m in blocks:
        assert not m.conv2.weight.any() and not m.conv2.bias.any()
        x, emb = torch.randn(2, m.conv1.in_channels, 8, 8), torch.randn(2, m.emb.in_features)
        torch.testing.assert_close(m(x, emb), m.skip(x))  # each block starts as its skip path
    for m in attns:
        x = torch.randn(2, m.norm.num_channels, 4, 4)
        torch.testing.assert_close(m(x), x)


def test_spatial_transformer_proj_out_starts_at_zero():
    """The reference's SpatialTransformer: proj_out = zero_module(Conv2d(inner_dim, in_channels, 1)), so a new
    cross-attention block is the identity whatever the context."""
    torch.manual_seed(0)
    unet = tiny_unet(ctx=24)
    transformers = [m for m in unet.modules() if isinstance(m, SpatialTransformer)]
    assert transformers
    for m in transformers:
        assert not m.proj_out.weight.any() and not m.proj_out.bias.any()
        assert m.proj_in.weight.any()  # only the output projection is zeroed
        x, context = torch.randn(2, m.norm.num_channels, 4, 4), torch.randn(2, 5, 24)
        torch.testing.assert_close(m(x, context), x)
        with torch.no_grad():
            torch.nn.init.normal_(m.proj_out.weight)
        assert not torch.allclose(m(x, context), x)  # so the check above depends on the zeros


# ------------------------------------------------------------------------------------------- 6. sampler conventions
def toy_denoiser(z, t, cond):
    """A deterministic ε̂ that depends on z and t nonlinearly (so every step of the update matters)."""
    tf = t.float().view(-1, 1, 1, 1)
    return torch.tanh(0.7 * z + 0.001 * tf) + 0.05 * torch.sin(tf / 100)


def reference_ddim_parameters(alphas_cumprod: np.ndarray, steps: int):
    c = len(alphas_cumprod) // steps
    timesteps = np.asarray(list(range(0, len(alphas_cumprod), c))) + 1  # make_ddim_timesteps("uniform")
    alphas = alphas_cumprod[timesteps]
    alphas_prev = np.asarray([alphas_cumprod[0]] + alphas_cumprod[timesteps[:-1]].tolist())
    return timesteps, alphas, alphas_prev


def reference_ddim(ac: np.ndarray, x: torch.Tensor, steps: int) -> tuple[torch.Tensor, list[int]]:
    """DDIMSampler.ddim_sampling with eta = 0 (p_sample_ddim), transcribed."""
    timesteps, alphas, alphas_prev = reference_ddim_parameters(ac, steps)
    visited = []
    total_steps = timesteps.shape[0]  # S + 1 when S does not divide T
    for i, step in enumerate(np.flip(timesteps)):
        index = total_steps - i - 1
        e_t = toy_denoiser(x, torch.full((x.shape[0],), int(step)), None)
        a_t, a_prev = float(alphas[index]), float(alphas_prev[index])
        pred_x0 = (x - math.sqrt(1 - a_t) * e_t) / math.sqrt(a_t)
        x = math.sqrt(a_prev) * pred_x0 + math.sqrt(1 - a_prev) * e_t
        visited.append(int(step))
    return x, visited


def reference_plms(ac: np.ndarray, x: torch.Tensor, steps: int) -> torch.Tensor:
    """PLMSSampler.plms_sampling / p_sample_plms, transcribed."""
    timesteps, alphas, alphas_prev = reference_ddim_parameters(ac, steps)
    time_range = np.flip(timesteps)
    old_eps: list[torch.Tensor] = []

    def x_prev_of(x, e_t, index):
        a_t, a_prev = float(alphas[index]), float(alphas_prev[index])
        pred_x0 = (x - math.sqrt(1 - a_t) * e_t) / math.sqrt(a_t)
        return math.sqrt(a_prev) * pred_x0 + math.sqrt(1 - a_prev) * e_t

    total_steps = timesteps.shape[0]
    for i, step in enumerate(time_range):
        index = total_steps - i - 1
        t = torch.full((x.shape[0],), int(step))
        t_next = torch.full((x.shape[0],), int(time_range[min(i + 1, len(time_range) - 1)]))
        e_t = toy_denoiser(x, t, None)
        if len(old_eps) == 0:
            e_t_prime = (e_t + toy_denoiser(x_prev_of(x, e_t, index), t_next, None)) / 2
        elif len(old_eps) == 1:
            e_t_prime = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_t_prime = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_t_prime = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        x = x_prev_of(x, e_t_prime, index)
        old_eps = (old_eps + [e_t])[-3:]
    return x


@pytest.mark.parametrize("steps", [7, 10, 30, 50, 200])
def test_ddim_and_plms_with_ldm_reference_options_match_the_reference_update(steps):
    sched = Schedule.ldm()
    ac = sched.alpha_bar.numpy()
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref_z, ref_visited = reference_ddim(ac, noise, steps)
    visited, indices = [], []
    ours = ll.samplers.ddim(toy_denoiser, sched, noise, steps, callback=lambda i, t, z, x0: visited.append(t) or
                            indices.append(i), **LDM_REFERENCE)
    # make_ddim_timesteps: range(0, T, T // S) + 1, i.e. S + 1 timesteps when S does not divide T (7: 995, 853, ...)
    c = 1000 // steps
    assert visited == ref_visited and visited[-1] == 1 and visited[0] == (999 // c) * c + 1
    assert len(visited) == {7: 8, 10: 10, 30: 31, 50: 50, 200: 200}[steps] and indices == list(range(len(visited)))
    torch.testing.assert_close(ours, ref_z, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ll.samplers.plms(toy_denoiser, sched, noise, steps, **LDM_REFERENCE),
                               reference_plms(ac, noise, steps), rtol=1e-10, atol=1e-10)
    # the default (diffusers') convention is a different update: the options are what make the match
    assert not torch.allclose(ll.samplers.ddim(toy_denoiser, sched, noise, steps), ref_z, atol=1e-4)


def test_with_the_reference_spacing_steps_are_reported_per_visited_timestep():
    """S = 30 visits 31 timesteps: the callback sees steps 0..30 and notebook 04's scrubber counts 31 ("step i/31")."""
    from ldm_lite import widgets

    sched = Schedule.ldm()
    callback, trajectory = widgets.record_trajectory(sched)
    noise = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    z = ll.samplers.ddim(toy_denoiser, sched, noise, 30, callback=callback, **LDM_REFERENCE)
    assert z.shape == noise.shape  # the return is the final sample, as always
    assert [r.step for r in trajectory] == list(range(31)) and [r.t for r in trajectory][:2] == [991, 958]
    panel = widgets.reverse_scrubber(trajectory, lambda z: z)
    assert widgets.find(panel, widgets.MAIN_CONTROL_CLASS).max == 31
    assert "step 1/31" in widgets.find(panel, widgets.READOUT_CLASS).value


def test_reference_step_counts_that_index_t_equal_T_are_a_clear_error():
    sched = Schedule.ldm()
    with pytest.raises(IndexError):  # the transcription of make_ddim_timesteps + make_ddim_sampling_parameters fails
        reference_ddim_parameters(sched.alpha_bar.numpy(), 300)  # range(0, 1000, 3) + 1 ends at 1000
    noise = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    for sampler in (ll.samplers.ddim, ll.samplers.plms):
        with pytest.raises(ValueError, match=r"steps=300 .* t=1000, outside \[0, 999\].*use steps=250 or 334"):
            sampler(toy_denoiser, sched, noise, 300, **LDM_REFERENCE)
    for steps in (250, 334):  # the counts the error proposes work, here and in the transcription
        ref_timesteps = reference_ddim_parameters(sched.alpha_bar.numpy(), steps)[0]
        assert sched.timesteps(steps, **{k: LDM_REFERENCE[k] for k in ("spacing", "offset")}).tolist() == \
            ref_timesteps[::-1].tolist()


def test_reference_spacing_is_leading_when_steps_divide_T_so_default_samples_are_unchanged():
    sched = Schedule.ldm()
    divisors = [s for s in range(1, 1001) if 1000 % s == 0]
    for steps in divisors:  # the default sampler ("leading", offset 0) is untouched; the reference option equals it
        assert torch.equal(sched.timesteps(steps, "ldm_uniform"), sched.timesteps(steps, "leading"))
        if steps < 1000:
            assert torch.equal(sched.timesteps(steps, "ldm_uniform", 1), sched.timesteps(steps, "leading", 1))
    for fn in (ll.samplers.ddim, ll.samplers.plms, ll.samplers.ddpm, ll.samplers.dpm_solver_pp):
        assert inspect.signature(fn).parameters["spacing"].default == "leading"
        assert inspect.signature(fn).parameters["offset"].default == 0


def reference_pixel_ddpm(betas: np.ndarray, x: torch.Tensor, clip: bool, generator: torch.Generator) -> torch.Tensor:
    """The pixel-space `DDPM.p_sample_loop` / `p_sample` / `p_mean_variance(clip_denoised)`, transcribed: the only
    reference path that clamps x̂_0 (`LatentDiffusion` sets clip_denoised = False; DDIM and PLMS never clamp)."""
    alphas = 1 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.append(1.0, ac[:-1])
    coef1, coef2 = betas * np.sqrt(ac_prev) / (1 - ac), (1 - ac_prev) * np.sqrt(alphas) / (1 - ac)
    log_var = np.log(np.maximum(betas * (1 - ac_prev) / (1 - ac), 1e-20))  # posterior_log_variance_clipped
    for i in reversed(range(len(betas))):
        e = toy_denoiser(x, torch.full((x.shape[0],), i), None)
        x_recon = math.sqrt(1 / ac[i]) * x - math.sqrt(1 / ac[i] - 1) * e  # predict_start_from_noise
        if clip:
            x_recon = x_recon.clamp(-1, 1)
        mean = coef1[i] * x_recon + coef2[i] * x
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = mean + (i != 0) * math.exp(0.5 * log_var[i]) * noise
    return x


def test_clip_x0_is_the_pixel_ddpm_clamp_and_no_reference_ddim_clamps():
    sched = Schedule.ldm(T=40)
    noise = 3 * torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x0_seen = []
    ours = ll.samplers.ddpm(toy_denoiser, sched, noise, generator=torch.Generator().manual_seed(1), clip_x0=1.0,
                            callback=lambda i, t, z, x0: x0_seen.append(x0))
    ref = reference_pixel_ddpm(sched.betas.numpy(), noise, True, torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    assert max(float(x.abs().max()) for x in x0_seen) == 1.0  # the clamp was active (x̂_0 reaches past ±1 here)
    unclipped = ll.samplers.ddpm(toy_denoiser, sched, noise, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(unclipped, reference_pixel_ddpm(sched.betas.numpy(), noise, False,
                                                               torch.Generator().manual_seed(1)), rtol=1e-10, atol=1e-10)
    assert not torch.allclose(unclipped, ours, atol=1e-3)
    # DDIMSampler has no clamp: the reference's DDIM is the kit's with clip_x0=None (its default), not 1.0
    ref_ddim, _ = reference_ddim(sched.alpha_bar.numpy(), noise, 10)
    torch.testing.assert_close(ll.samplers.ddim(toy_denoiser, sched, noise, 10, **LDM_REFERENCE), ref_ddim,
                               rtol=1e-10, atol=1e-10)
    assert not torch.allclose(ll.samplers.ddim(toy_denoiser, sched, noise, 10, clip_x0=1.0, **LDM_REFERENCE),
                              ref_ddim, atol=1e-3)


def test_latent_diffusion_sample_passes_the_reference_options():
    ldm = LatentDiffusion(tiny_ae(), tiny_unet(), image_size=16)
    seen = []
    ldm.sample(1, sampler="plms", steps=5, callback=lambda i, t, z, x0: seen.append(t), **LDM_REFERENCE)
    assert seen == [801, 601, 401, 201, 1]


# ------------------------------------------------------------------------------------------- layout tokens
def reference_layout_tokens(boxes: list, labels: list, no_tokens: int, no_max_objects: int) -> list[int]:
    """taming's ObjectsBoundingBoxConditionalBuilder._make_object_descriptors + tokenize_coordinates, transcribed
    (no shuffle, no crop tokens); bbox (x, y, w, h) there, (x0, y0, x1, y1) here."""
    sections, none = int(math.sqrt(no_tokens)), no_tokens - 1

    def tokenize_coordinates(x, y):
        return int(round(y * (sections - 1))) * sections + int(round(x * (sections - 1)))

    triples = [(c, tokenize_coordinates(b[0], b[1]), tokenize_coordinates(b[0] + (b[2] - b[0]), b[1] + (b[3] - b[1])))
               for b, c in zip(boxes, labels) if c >= 0]
    triples += [(none, none, none)] * (no_max_objects - len(triples))
    return [t for triple in triples for t in triple]


def test_layout_token_conditioner_is_the_reference_tokenisation_into_a_transformer(tmp_path):
    from ldm_lite.conditioning import LayoutTokenConditioner, LayoutTokenConditionerConfig
    from ldm_lite.datasets import boxes_from_attrs

    torch.manual_seed(0)
    cond = LayoutTokenConditioner(LayoutTokenConditionerConfig(grid=12, dim=32, depth=1, max_objects=3))
    ds = ll.datasets.shapes(16, n=32, seed=3)
    attrs = torch.stack([ds[i]["attrs"] for i in range(32)])
    given = dict(zip(("boxes", "box_labels"), boxes_from_attrs(attrs)))
    boxes, labels = cond.layout(given)
    ids = cond.tokenize(boxes, labels)
    assert ids.shape == (32, 9)
    for i in range(32):  # the same ids as the reference's builder with no_tokens = 12² + 1 (so √ gives 12 sections)
        assert ids[i].tolist() == reference_layout_tokens(boxes[i].tolist(), labels[i].tolist(), 12 * 12 + 1, 3)
    assert ids.max() == cond.none == 144 and (ids < 6).any()  # class tokens and corners share one table
    raw, _ = boxes_from_attrs(attrs)
    assert torch.equal(boxes[labels >= 0], raw[labels >= 0])  # the kit's checked layout feeds it unchanged
    c = cond(given)
    assert c.context.shape == (32, 9, 32)
    empty = {"boxes": torch.zeros(1, 3, 4), "box_labels": torch.full((1, 3), -1)}
    torch.testing.assert_close(cond(empty).context, cond.null(1).context)  # ∅ is the empty layout
    one = {"boxes": [[[0.1, 0.1, 0.5, 0.5]]], "box_labels": [[2]]}
    moved = {"boxes": [[[0.5, 0.5, 0.9, 0.9]]], "box_labels": [[2]]}
    assert not torch.allclose(cond(one).context, cond(moved).context)
    with pytest.raises(ValueError, match="max_objects=3"):
        cond({"boxes": [[[0.1, 0.1, 0.5, 0.5]] * 4], "box_labels": [[0] * 4]})
    # trained through eq. 3 like any conditioner; saved and loaded inside a LatentDiffusion
    ldm = LatentDiffusion(IdentityAutoencoder(), tiny_unet(ctx=32), cond, image_size=16)
    for m in [*(m.proj_out for m in ldm.unet.modules() if isinstance(m, SpatialTransformer)), ldm.unet.conv_out]:
        torch.nn.init.normal_(m.weight, std=0.1)  # as if trained: zero-initialised layers pass no gradient to τ_θ
    ldm.loss({"image": images(2), **{k: v[:2] for k, v in given.items()}}, generator=torch.Generator().manual_seed(0)).backward()
    assert cond.token_embedding.weight.grad.abs().sum() > 0
    ldm.save_pretrained(tmp_path / "m")
    back = LatentDiffusion.from_pretrained(tmp_path / "m")
    assert isinstance(back.conditioner, LayoutTokenConditioner)
    torch.testing.assert_close(back.conditioner(one).context, cond.eval()(one).context)


# ------------------------------------------------------------------------------------------- inpainting encoding
def test_inpainting_reference_encoding_is_the_reference_scripts_condition():
    from ldm_lite.spatial import InpaintingConditioner, InpaintingConfig, known_latents

    ae, x = tiny_ae(), images(2)
    m = torch.zeros(2, 16, 16)
    m[0, 2:9, 3:12], m[1, 8:, :] = 1, 1
    cond = InpaintingConditioner(InpaintingConfig(reference_encoding=True))
    cond.attach_autoencoder(ae)
    c = cond({"image": x, "inpaint_mask": m}).concat
    # scripts/inpaint.py make_batch + the sampling loop, transcribed: images and masks in [0, 1], the hole zeroed,
    # everything mapped by × 2 - 1, the masked image encoded, the mask resized by F.interpolate's default (nearest)
    image, mask = (x + 1) / 2, m[:, None]
    masked_image = (1 - mask) * image
    batch = {k: v * 2.0 - 1.0 for k, v in {"image": image, "mask": mask, "masked_image": masked_image}.items()}
    with torch.no_grad():
        ref_c = ae.to_latent(batch["masked_image"], sample=False)  # × s: the kit's latent scale (1.0 there)
    ref_cc = torch.nn.functional.interpolate(batch["mask"], size=ref_c.shape[-2:])
    torch.testing.assert_close(c, torch.cat([ref_c, ref_cc], 1))
    assert set(c[:, -1].unique().tolist()) == {-1.0, 1.0}
    # the kit's default encoding differs (hole 0, area-pooled mask in [0, 1]) and stays the default
    kit = InpaintingConditioner()
    kit.attach_autoencoder(ae)
    assert not InpaintingConfig().reference_encoding
    kit_c = kit({"image": x, "inpaint_mask": m}).concat
    assert not torch.allclose(kit_c, c) and float(kit_c[:, -1].min()) >= 0 and float(kit_c[:, -1].max()) <= 1
    # replacement sampling reads either: a cell is kept where the (pooled or sampled) mask says "known"
    torch.testing.assert_close(known_latents(Condition(concat=c))[1], (ref_cc < 0).float())


# ------------------------------------------------------------------------------------------- smaller differences
def test_the_smaller_listed_differences_hold():
    """Each fact the "smaller differences" table of docs/differences.md states about the kit."""
    from ldm_lite.losses import AutoencoderLossConfig
    from ldm_lite.text import TextConditioner

    unet = tiny_unet(ctx=32)
    norms = [m for m in unet.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.eps == 1e-6 for m in norms)  # the reference's openaimodel: 1e-5 (GroupNorm32's default)
    attn = next(m for m in tiny_unet().modules() if isinstance(m, AttentionBlock))
    assert attn.attn.to_qkv.bias is None  # the reference's AttentionBlock: conv_nd(1, C, 3C, 1) with a bias
    assert AutoencoderLossConfig().disc_weight == 0.5  # the reference's KL configs 0.5; vq-f4 0.75, vq-f8 0.6
    text = TextConditioner()  # no vocabulary given: a row for every BERT WordPiece token, as the reference
    assert text.config.max_length == 24 and text.token_embedding.num_embeddings == 30_522 + 1  # + the unseen row
    from ldm_lite.datasets import shapes_vocabulary
    from ldm_lite.text import TextConditionerConfig
    small = TextConditioner(TextConditionerConfig(vocabulary=shapes_vocabulary()))  # the recipes' (26 + 4 rows)
    assert small.token_embedding.num_embeddings < 100


def test_ema_covers_the_conditioner_as_well_as_the_unet():
    """The reference's LitEma tracks `self.model` (the UNet) only; the kit's EMA also averages τ_θ."""
    def trained(ema):
        torch.manual_seed(0)
        cond = ClassConditioner(ClassConditionerConfig(num_classes=6, dim=32))
        ldm = LatentDiffusion(IdentityAutoencoder(), tiny_unet(ctx=32), cond, image_size=16)
        ll.train.train_ldm(ldm, ll.datasets.shapes(16, n=8, seed=0), steps=3, batch_size=4, warmup=0, device="cpu",
                           progress=False, ema=ema, lr=1e-2)
        return ldm

    raw, averaged = trained(None), trained(0.5)
    assert not torch.allclose(raw.conditioner.embedding.weight, averaged.conditioner.embedding.weight)
    assert not torch.allclose(raw.unet.conv_in.weight, averaged.unet.conv_in.weight)


# ------------------------------------------------------------------------------------------- 7. no silent fallbacks
def test_unestimated_scale_factor_warns_with_the_fix():
    ae = tiny_ae()
    ae.scale_factor.fill_(1.0)
    with pytest.warns(ScaleFactorWarning, match="estimate_scale_factor"):
        LatentDiffusion(ae, tiny_unet(), image_size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScaleFactorWarning)
        LatentDiffusion(tiny_ae(), tiny_unet(), image_size=16)  # estimated (0.7): quiet
        LatentDiffusion(IdentityAutoencoder(), tiny_unet(), image_size=16)  # pixel space: s = 1 by definition
        LatentDiffusion.from_pretrained(SHIPPED_LDM)  # loading builds fresh parts first: no false alarm


def test_guidance_on_a_model_never_trained_with_the_null_condition_is_an_error():
    torch.manual_seed(0)
    cond = ClassConditioner(ClassConditionerConfig(num_classes=6, dim=32))
    ldm = LatentDiffusion(IdentityAutoencoder(), tiny_unet(ctx=32), cond, image_size=16, cond_drop_prob=0.0)
    with pytest.raises(ValueError, match="cond_drop_prob"):
        ldm.sample(labels=[0, 1], steps=2, guidance_scale=3.0)
    with pytest.raises(ValueError, match="cond_drop_prob"):  # image-to-image too
        ll.spatial.sdedit(ldm, images(2), 0.5, batch={"label": torch.tensor([0, 1])}, steps=2, guidance_scale=3.0)
    assert ldm.sample(labels=[0, 1], steps=2).shape == (2, 3, 16, 16)  # scale 1 needs no ∅
    LatentDiffusion(IdentityAutoencoder(), tiny_unet(ctx=32), cond, image_size=16).sample(
        labels=[0], steps=2, guidance_scale=3.0)  # trained with dropout: fine


# ------------------------------------------------------------------------------------------- 8. sentences
def test_no_scaled_linear_schedule_keeps_more_signal_than_linear_at_every_t():
    """Notebook 02: linear keeps the most signal near t = 0, the √β schedules more later."""
    linear, sd, paper = Schedule.linear().alpha_bar, Schedule.stable_diffusion().alpha_bar, Schedule.ldm().alpha_bar
    assert f"{float(linear[50]):.3f} {float(sd[50]):.3f} {float(paper[50]):.3f}" == "0.970 0.952 0.917"
    assert bool((sd[:100] < linear[:100]).all()) and bool((sd[200:] > linear[200:]).all())
    assert bool((paper[:270] < linear[:270]).all()) and bool((paper[300:] > linear[300:]).all())


@pytest.mark.parametrize("steps", [10, 50])
def test_ddim_with_eta_one_is_the_ddpm_update(steps):
    """Notebook 04: with the same noise draws, DDIM η = 1 and DDPM give the same samples."""
    sched = Schedule.ldm()
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ddpm = ll.samplers.ddpm(toy_denoiser, sched, noise, steps, generator=torch.Generator().manual_seed(1))
    ddim = ll.samplers.ddim(toy_denoiser, sched, noise, steps, eta=1.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ddim, ddpm, rtol=1e-9, atol=1e-9)
    eta_half = ll.samplers.ddim(toy_denoiser, sched, noise, steps, eta=0.5, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(eta_half, ddpm, atol=1e-3)


def test_fid_with_fewer_samples_than_feature_dimensions_warns():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(300, 128, generator=g), torch.randn(300, 128, generator=g)
    with pytest.warns(ll.metrics.FIDSampleWarning, match="64 samples of 128-dimensional"):
        ll.metrics.fid(real, fake[:64])  # the main job's 64 samples against 128-d classifier features
    with warnings.catch_warnings():
        warnings.simplefilter("error", ll.metrics.FIDSampleWarning)
        ll.metrics.fid(real, fake)
