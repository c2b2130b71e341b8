"""The paper's checkpoints into the kit (`ldm_lite.interop.from_compvis`), and the kit's models out to diffusers.

State dicts are made in the reference's exact key layout by a transcription of its modules
(`tests/helpers/compvis_reference.py`) with random weights at reduced width; full-size configurations (the values of
the reference's config.yaml files) are checked for every key and shape on torch.device("meta"). Oracles: diffusers'
own original-checkpoint converters where they exist (KL first stage, cross-attention UNet), the transcription
elsewhere (VQ, first stages with attention inside the levels, the unconditional UNet).
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ldm_lite import interop
from ldm_lite.autoencoder import Autoencoder
from ldm_lite.checkpoint import CheckpointError
from ldm_lite.errors import UsageError
from ldm_lite.ldm import LatentDiffusion
from ldm_lite.unet import UNet

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
import compvis_reference as ref  # noqa: E402

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------- configs
def first_stage_config(kind: str, ch_mult, z: int, attn=(), n_embed: int | None = None, ch: int = 128,
                       num_res_blocks: int = 2, attn_type: str | None = None) -> dict:
    """The model section of models/first_stage_models/*/config.yaml (the values that shape the network)."""
    dd = {"double_z": kind == "kl", "z_channels": z, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": ch,
          "ch_mult": list(ch_mult), "num_res_blocks": num_res_blocks, "attn_resolutions": list(attn), "dropout": 0.0}
    if attn_type is not None:
        dd["attn_type"] = attn_type
    params = {"embed_dim": z, "ddconfig": dd, "lossconfig": {"target": "torch.nn.Identity"}}
    if kind == "kl":
        return {"target": "ldm.models.autoencoder.AutoencoderKL", "params": params}
    return {"target": "ldm.models.autoencoder.VQModelInterface", "params": {**params, "n_embed": n_embed}}


FIRST_STAGES = {  # models/first_stage_models/<name>/config.yaml
    "kl-f4": first_stage_config("kl", [1, 2, 4], 3),
    "kl-f8": first_stage_config("kl", [1, 2, 4, 4], 4),
    "kl-f16": first_stage_config("kl", [1, 1, 2, 2, 4], 16, [16]),
    "kl-f32": first_stage_config("kl", [1, 1, 2, 2, 4, 4], 64, [16, 8]),
    "vq-f4": first_stage_config("vq", [1, 2, 4], 3, n_embed=8192),
    "vq-f4-noattn": first_stage_config("vq", [1, 2, 4], 3, n_embed=8192, attn_type="none"),
    "vq-f8": first_stage_config("vq", [1, 2, 2, 4], 4, [32], n_embed=16384),
    "vq-f8-n256": first_stage_config("vq", [1, 2, 2, 4], 4, [32], n_embed=256),
    "vq-f16": first_stage_config("vq", [1, 1, 2, 2, 4], 8, [16], n_embed=16384),
}

UNETS = {  # models/ldm/<name>/config.yaml: unet_config.params
    "lsun_churches256": dict(in_channels=4, out_channels=4, model_channels=192, attention_resolutions=[1, 2, 4, 8],
                             num_res_blocks=2, channel_mult=[1, 2, 2, 4, 4], num_heads=8, use_scale_shift_norm=True,
                             resblock_updown=True),
    "celeba256": dict(in_channels=3, out_channels=3, model_channels=224, attention_resolutions=[8, 4, 2],
                      num_res_blocks=2, channel_mult=[1, 2, 3, 4], num_head_channels=32),
    "cin256": dict(in_channels=4, out_channels=4, model_channels=256, attention_resolutions=[4, 2, 1], num_res_blocks=2,
                   channel_mult=[1, 2, 4], num_head_channels=32, use_spatial_transformer=True, transformer_depth=1,
                   context_dim=512),
    "cin256-v2": dict(in_channels=3, out_channels=3, model_channels=192, attention_resolutions=[8, 4, 2],
                      num_res_blocks=2, channel_mult=[1, 2, 3, 5], num_heads=1, use_spatial_transformer=True,
                      transformer_depth=1, context_dim=512),
}
UNET_FIRST_STAGE = {"lsun_churches256": "kl-f8", "celeba256": "vq-f4", "cin256": "vq-f8", "cin256-v2": "vq-f4"}


def ldm_config(name: str, unet: dict, first_stage: dict, cond: dict | str = "__is_unconditional__",
               linear_end: float = 0.0195, **extra) -> dict:
    params = {"linear_start": 0.0015, "linear_end": linear_end, "timesteps": 1000, "image_size": 8,
              "channels": unet["in_channels"], "unet_config": {"target": "...openaimodel.UNetModel", "params": unet},
              "first_stage_config": first_stage, "cond_stage_config": cond, **extra}
    if cond != "__is_unconditional__":
        params["conditioning_key"] = "crossattn"
    return {"model": {"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": params}}


def small_first_stage(name: str) -> dict:
    """The same layout at reduced width: ch 32, one ResNet block per level, codebook of 64."""
    cfg = copy.deepcopy(FIRST_STAGES[name])
    cfg["params"]["ddconfig"].update(ch=32, num_res_blocks=1)
    if "n_embed" in cfg["params"]:
        cfg["params"]["n_embed"] = 64
    return cfg


def small_unet(name: str) -> dict:
    p = dict(UNETS[name], model_channels=32, num_res_blocks=1)
    if "context_dim" in p:
        p["context_dim"] = 16
    return p


def reference_first_stage(cfg: dict, seed: int = 0) -> ref.FirstStage:
    p = cfg["params"]
    kind = "kl" if cfg["target"].endswith("AutoencoderKL") else "vq"
    dd = {k: v for k, v in p["ddconfig"].items() if k != "dropout"}
    return ref.randomize(ref.FirstStage(kind, dd, p["embed_dim"], p.get("n_embed", 0)), seed).eval()


def images(n=2, size=32, seed=0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ----------------------------------------------------------------------------------------------- first stages
@pytest.mark.parametrize("name", ["kl-f4", "kl-f8"])
def test_kl_first_stage_matches_diffusers_own_conversion(name):
    from diffusers import AutoencoderKL
    from diffusers.pipelines.stable_diffusion.convert_from_ckpt import (
        convert_ldm_vae_checkpoint,
        create_vae_diffusers_config,
    )

    cfg = small_first_stage(name)
    state = {k: v for k, v in reference_first_stage(cfg).state_dict().items()}
    ae = interop.from_compvis(state, cfg)
    original = {"model": {"params": {"first_stage_config": cfg}}}
    vae = AutoencoderKL(**create_vae_diffusers_config(original, image_size=256)).eval()
    vae.load_state_dict(convert_ldm_vae_checkpoint(state, vae.config))
    x = images()
    with torch.no_grad():
        mean, theirs_mean = ae.encode(x).mode(), vae.encode(x).latent_dist.mean
        torch.testing.assert_close(mean, theirs_mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ae.decode(mean), vae.decode(mean).sample, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(FIRST_STAGES))
def test_every_first_stage_matches_the_reference_modules(name):
    cfg = small_first_stage(name)
    theirs = reference_first_stage(cfg, seed=1)
    ae = interop.from_compvis(theirs.state_dict(), cfg)
    x = images()
    with torch.no_grad():
        z = theirs.encode(x)  # KL: posterior mean; VQ: the pre-quantization latent the LDM diffuses
        ours = ae.encode(x).mode() if ae.quantizer is None else ae.latent(x)
        torch.testing.assert_close(ours, z, atol=1e-5, rtol=1e-5)
        if ae.quantizer is not None:
            assert torch.equal(ae.quantizer.nearest(z), theirs.quantize_indices(z))
        torch.testing.assert_close(ae.decode(z), theirs.decode(z), atol=1e-5, rtol=1e-5)
    levels_attending = {"kl-f16": 1, "kl-f32": 2, "vq-f8": 1, "vq-f8-n256": 1, "vq-f16": 1}.get(name, 0)
    assert sum(len(level.attns) > 0 for level in ae.encoder.down) == levels_attending
    assert ae.config.attention == (name != "vq-f4-noattn")


@pytest.mark.parametrize("name", list(FIRST_STAGES))
def test_full_size_first_stages_have_the_reference_keys_and_shapes(name):
    cfg = FIRST_STAGES[name]
    with torch.device("meta"):
        theirs = ref.FirstStage("kl" if "kl" in name else "vq", cfg["params"]["ddconfig"], cfg["params"]["embed_dim"],
                                cfg["params"].get("n_embed", 0))
        state = {"first_stage_model." + k: v for k, v in theirs.state_dict().items()}
        ae = interop.convert_first_stage(state, cfg, "first_stage_model.")  # raises on any missing/extra key or shape
    n_params = sum(p.numel() for n, p in theirs.named_parameters() if not n.startswith("loss."))
    assert sum(p.numel() for p in ae.parameters()) == n_params
    assert ae.f == 2 ** (len(cfg["params"]["ddconfig"]["ch_mult"]) - 1)


# ----------------------------------------------------------------------------------------------- UNets
def test_unconditional_unets_match_the_reference_modules():
    """churches (resblock_updown, 8 fixed heads, scale-shift norm) and celeba (32-wide heads), legacy qkv order."""
    g = torch.Generator().manual_seed(0)
    for name in ("lsun_churches256", "celeba256"):
        params = small_unet(name)
        theirs = ref.randomize(ref.UNetModel(**params), 2).eval()
        unet = interop.convert_unet({"model.diffusion_model." + k: v for k, v in theirs.state_dict().items()}, params)
        x = torch.randn(2, params["in_channels"], 16, 16, generator=g)
        t = torch.tensor([3, 870])
        with torch.no_grad():
            torch.testing.assert_close(unet(x, t), theirs(x, t), atol=1e-5, rtol=1e-5)
    assert unet.config.norm_eps == 1e-5 and unet.config.attention_qkv_bias


def test_new_attention_order_converts_too():
    params = dict(small_unet("celeba256"), use_new_attention_order=True)
    theirs = ref.randomize(ref.UNetModel(**params), 3).eval()
    unet = interop.convert_unet(theirs.state_dict(), params, prefix="")
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([500])
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t), theirs(x, t), atol=1e-5, rtol=1e-5)


def class_conditional_checkpoint(name: str, seed: int = 4):
    params = small_unet(name)
    theirs = ref.randomize(ref.UNetModel(**params), seed).eval()
    n_classes = 1001 if name == "cin256-v2" else 1000
    embedder = ref.randomize(ref.ClassEmbedder(params["context_dim"], n_classes), seed + 1)
    fs_cfg = small_first_stage(UNET_FIRST_STAGE[name])
    first_stage = reference_first_stage(fs_cfg, seed + 2)
    cond = {"target": "ldm.modules.encoders.modules.ClassEmbedder",
            "params": {"embed_dim": params["context_dim"], "key": "class_label",
                       **({"n_classes": n_classes} if name == "cin256-v2" else {})}}
    cfg = ldm_config(name, params, fs_cfg, cond)
    state = {**{"model.diffusion_model." + k: v for k, v in theirs.state_dict().items()},
             **{"first_stage_model." + k: v for k, v in first_stage.state_dict().items()},
             **{"cond_stage_model." + k: v for k, v in embedder.state_dict().items()},
             **ref.schedule_buffers(ref.make_beta_schedule(1000, 0.0015, 0.0195))}
    return cfg, state, theirs, embedder


def test_class_conditional_unet_matches_diffusers_own_conversion():
    from diffusers import UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.convert_from_ckpt import (
        convert_ldm_unet_checkpoint,
        create_unet_diffusers_config,
    )

    cfg, state, _, embedder = class_conditional_checkpoint("cin256-v2")
    ldm = interop.from_compvis(state, cfg)
    dcfg = create_unet_diffusers_config(cfg, image_size=32)
    oracle = UNet2DConditionModel(**dcfg).eval()
    oracle.load_state_dict(convert_ldm_unet_checkpoint(dict(state), dcfg))
    g = torch.Generator().manual_seed(5)
    z, t, labels = torch.randn(3, 3, 16, 16, generator=g), torch.tensor([0, 421, 999]), torch.tensor([7, 999, 0])
    with torch.no_grad():
        cond = ldm.condition({"label": labels}, 3)
        torch.testing.assert_close(cond.context, embedder(labels))
        ours = ldm.denoiser(z, t, cond)
        torch.testing.assert_close(ours, oracle(z, t, encoder_hidden_states=embedder(labels)).sample,
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ldm.conditioner.null(1).context[0], embedder.embedding.weight[1000:])  # ∅ = row 1000
        with pytest.raises(UsageError, match="0..999"):  # ∅ only through null(), never as a label value
            ldm.condition({"label": torch.tensor([1000])}, 1)
    assert ldm.conditioner.config.num_classes == 1000 and ldm.config.cond_drop_prob > 0
    with pytest.raises(CheckpointError, match="no EMA copy"):  # cin256-v2 was trained with use_ema: False
        interop.from_compvis(state, cfg, ema=True)


def test_cin256_v1_has_no_null_class_and_refuses_guidance():
    cfg, state, theirs, embedder = class_conditional_checkpoint("cin256")
    ldm = interop.from_compvis(state, cfg)
    z, t, labels = torch.randn(2, 4, 16, 16), torch.tensor([10, 990]), torch.tensor([0, 999])
    with torch.no_grad():
        torch.testing.assert_close(ldm.denoiser(z, t, ldm.condition({"label": labels}, 2)),
                                   theirs(z, t, embedder(labels)), atol=1e-5, rtol=1e-5)
    assert ldm.conditioner.embedding.num_embeddings == 1000
    with pytest.raises(ValueError, match="guidance_scale"):
        ldm.sample(labels=[1], steps=2, guidance_scale=3.0)
    with pytest.raises(ValueError, match="no ∅ row"):
        ldm.conditioner.null(1)


@pytest.mark.parametrize("name", list(UNETS))
def test_full_size_unets_have_the_reference_keys_and_shapes(name):
    params = UNETS[name]
    with torch.device("meta"):
        theirs = ref.UNetModel(**params)
        unet = interop.convert_unet({"model.diffusion_model." + k: v for k, v in theirs.state_dict().items()}, params)
    assert sum(p.numel() for p in unet.parameters()) == sum(p.numel() for p in theirs.parameters())


# ----------------------------------------------------------------------------------------------- whole LDM, files
@pytest.fixture
def churches(tmp_path):
    """A churches-layout LDM checkpoint (KL first stage, scale_by_std) as a Lightning-style .ckpt."""
    params = small_unet("lsun_churches256")
    unet = ref.randomize(ref.UNetModel(**params), 6).eval()
    fs_cfg = small_first_stage("kl-f8")
    first_stage = reference_first_stage(fs_cfg, 7)
    cfg = ldm_config("lsun_churches256", params, fs_cfg, linear_end=0.0155, scale_by_std=True, image_size=16)
    state = {**{"model.diffusion_model." + k: v for k, v in unet.state_dict().items()},
             **{"first_stage_model." + k: v for k, v in first_stage.state_dict().items()},
             **{"model_ema.diffusion_model" + k.replace(".", ""): v + 1 for k, v in unet.state_dict().items()},
             "model_ema.num_updates": torch.tensor(5), "model_ema.decay": torch.tensor(0.9999),
             **ref.schedule_buffers(ref.make_beta_schedule(1000, 0.0015, 0.0155)),
             "scale_factor": torch.tensor(0.22), "logvar": torch.zeros(1000)}
    path = tmp_path / "model.ckpt"
    with lightning_module():
        from pytorch_lightning.callbacks.model_checkpoint import ModelCheckpoint

        torch.save({"state_dict": state, "epoch": 3, "pytorch-lightning_version": "1.4.2",
                    "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(0.1), "monitor": "val/loss"}},
                    "loops": {"fit_loop": ModelCheckpoint()}}, path)
    return path, cfg, state, unet, first_stage


class lightning_module:
    """A stand-in `pytorch_lightning.callbacks.model_checkpoint` module, so that torch.save pickles a reference to
    the class as a real Lightning checkpoint does (the loader must never import or run it)."""

    def __enter__(self):
        names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
        self.saved = {n: sys.modules.get(n) for n in names}
        mod = types.ModuleType(names[-1])
        cls = type("ModelCheckpoint", (), {"__module__": names[-1]})
        mod.ModelCheckpoint = cls
        for n in names[:-1]:
            sys.modules[n] = types.ModuleType(n)
        sys.modules[names[-1]] = mod
        sys.modules["pytorch_lightning.callbacks"].model_checkpoint = mod
        return mod

    def __exit__(self, *exc):
        for n, m in self.saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def test_ldm_ckpt_with_lightning_objects_loads_with_its_schedule_and_scale_factor(churches, tmp_path):
    path, cfg, state, unet, first_stage = churches
    assert "pytorch_lightning" not in sys.modules
    with pytest.raises(pickle.UnpicklingError):  # plain weights_only refuses the Lightning class
        torch.load(path, weights_only=True)
    ldm = interop.from_compvis(path, cfg, ema=False)
    assert "pytorch_lightning" not in sys.modules  # stubs, never an import
    assert float(ldm.autoencoder.scale_factor) == pytest.approx(0.22)
    torch.testing.assert_close(ldm.schedule.betas, torch.from_numpy(ref.make_beta_schedule(1000, 0.0015, 0.0155)),
                               rtol=0, atol=0)
    assert ldm.config.image_size == 128 and ldm.conditioner is None
    z, t = torch.randn(2, 4, 16, 16), torch.tensor([1, 999])
    with torch.no_grad():
        torch.testing.assert_close(ldm.unet(z, t), unet(z, t), atol=1e-5, rtol=1e-5)
        x = images(1)
        torch.testing.assert_close(ldm.autoencoder.to_latent(x, sample=False), 0.22 * first_stage.encode(x),
                                   atol=1e-5, rtol=1e-5)
    x_T = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(8))  # the reference DDIMSampler's steps
    theirs = ref.ddim_sample(unet, (1 - ref.make_beta_schedule(1000, 0.0015, 0.0155)).cumprod(), 5, x_T)
    ours = ldm.sample(1, noise=x_T, steps=5, offset=1, final_alpha_one=False, return_latents=True)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    ldm.save_pretrained(tmp_path / "kit")  # a kit folder that loads back
    again = LatentDiffusion.from_pretrained(tmp_path / "kit")
    with torch.no_grad():
        torch.testing.assert_close(again.unet(z, t), ldm.unet(z, t), rtol=0, atol=0)
    ema = interop.from_compvis(path, cfg)  # by default the EMA copy (here: the weights + 1), as the reference samples
    torch.testing.assert_close(ema.unet.conv_in.weight, ldm.unet.conv_in.weight + 1)
    safetensors_path = tmp_path / "model.safetensors"  # the same weights as .safetensors
    save_file({k: v.contiguous() for k, v in state.items()}, str(safetensors_path))
    again = interop.from_compvis(safetensors_path, cfg, ema=False)
    torch.testing.assert_close(again.unet.conv_out.weight, ldm.unet.conv_out.weight, rtol=0, atol=0)
    fs = interop.from_compvis(path, cfg, first_stage_only=True)  # the LDM's first stage alone
    assert isinstance(fs, Autoencoder) and torch.equal(fs.decoder.conv_out.weight, ldm.autoencoder.decoder.conv_out.weight)


class _Exploit:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_a_ckpt_carrying_a_pickled_callable_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran.txt"
    path = tmp_path / "evil.ckpt"
    cfg = small_first_stage("kl-f4")
    torch.save({"state_dict": reference_first_stage(cfg).state_dict(), "hook": _Exploit(str(marker))}, path)
    with pytest.raises(CheckpointError, match="builtins.exec"):
        interop.from_compvis(path, cfg)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # and torch's own guard agrees it is unsafe
        torch.load(path, weights_only=True)
    assert not marker.exists()


def test_mismatching_checkpoints_name_the_first_bad_key(tmp_path):
    cfg = small_first_stage("kl-f8")
    state = reference_first_stage(cfg).state_dict()
    wrong = copy.deepcopy(cfg)
    wrong["params"]["ddconfig"]["ch_mult"] = [1, 2, 2, 4]
    with pytest.raises(CheckpointError, match=r"'encoder.down.2.block.0.conv1.weight' has shape"):
        interop.from_compvis(state, wrong)
    missing = {k: v for k, v in state.items() if k != "decoder.up.1.block.0.conv2.bias"}
    with pytest.raises(CheckpointError, match="no key 'decoder.up.1.block.0.conv2.bias'"):
        interop.from_compvis(missing, cfg)
    extra = dict(state, **{"encoder.down.0.attn.0.q.weight": torch.zeros(32, 32, 1, 1)})
    with pytest.raises(CheckpointError, match="'encoder.down.0.attn.0.q.weight' has no place"):
        interop.from_compvis(extra, cfg)
    with pytest.raises(ValueError, match="does not exist"):
        interop.from_compvis(tmp_path / "absent.ckpt", cfg)
    with pytest.raises(ValueError, match="BERTEmbedder"):
        text = ldm_config("text2img256", small_unet("cin256"), cfg,
                          {"target": "ldm.modules.encoders.modules.BERTEmbedder", "params": {"n_embed": 16}})
        interop.from_compvis(state, text)


def test_cli_convert_compvis_writes_a_kit_folder_and_exits_2_on_errors(churches, tmp_path, capsys):
    import yaml

    from ldm_lite import cli

    path, cfg, *_ = churches
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "converted"
    assert cli.main(["convert", "compvis", str(path), "--config", str(config_path), "--out", str(out)]) in (0, None)
    assert isinstance(LatentDiffusion.from_pretrained(out), LatentDiffusion)
    bad = tmp_path / "bad.yaml"
    wrong = copy.deepcopy(cfg)
    wrong["model"]["params"]["unet_config"]["params"]["model_channels"] = 64
    bad.write_text(yaml.safe_dump(wrong))
    with pytest.raises(SystemExit) as e:
        cli.main(["convert", "compvis", str(path), "--config", str(bad), "--out", str(tmp_path / "no")])
    assert e.value.code == 2 and not (tmp_path / "no").exists()
    assert "model.diffusion_model." in capsys.readouterr().err.strip().splitlines()[-1]
    with pytest.raises(SystemExit) as e:
        cli.main(["convert", "compvis", str(path), "--out", str(tmp_path / "no")])
    assert e.value.code == 2 and "--config" in capsys.readouterr().err
    first_stage = small_first_stage("kl-f16")  # a first-stage checkpoint -> an Autoencoder folder
    torch.save({"state_dict": reference_first_stage(first_stage).state_dict()}, tmp_path / "ae.ckpt")
    (tmp_path / "ae.yaml").write_text(yaml.safe_dump({"model": first_stage}))
    cli.main(["convert", "compvis", str(tmp_path / "ae.ckpt"), "--config", str(tmp_path / "ae.yaml"),
              "--out", str(tmp_path / "ae")])
    ae = Autoencoder.from_pretrained(tmp_path / "ae")
    assert ae.config.attention_resolutions == (16,) and ae.f == 16
    small_ldm().save_pretrained(tmp_path / "kit")  # and out to diffusers
    assert cli.main(["convert", "diffusers", str(tmp_path / "kit"), "--out", str(tmp_path / "diffusers")]) == 0
    assert (tmp_path / "diffusers" / "model_index.json").is_file()


# ----------------------------------------------------------------------------------------------- out to diffusers
def small_ldm(regularizer: str = "kl", conditional: bool = False, seed: int = 0) -> LatentDiffusion:
    from ldm_lite.autoencoder import AutoencoderConfig
    from ldm_lite.conditioning import ClassConditioner, ClassConditionerConfig
    from ldm_lite.schedule import Schedule
    from ldm_lite.unet import UNetConfig

    torch.manual_seed(seed)
    make = AutoencoderConfig.kl if regularizer == "kl" else AutoencoderConfig.vq
    ae = Autoencoder(make(f=4, base_channels=16, attention=True, codebook_size=32) if regularizer == "vq"
                     else make(f=4, base_channels=16, attention=True))
    ae.scale_factor.fill_(0.8)
    unet = UNet(UNetConfig.small(in_channels=3, model_channels=32, scale_shift_norm=True,
                                 context_dim=16 if conditional else None))
    cond = ClassConditioner(ClassConditionerConfig(num_classes=4, dim=16)) if conditional else None
    with torch.no_grad():
        for p in [*unet.parameters(), *ae.parameters(), *(cond.parameters() if cond else [])]:
            p.add_(0.1 * torch.randn_like(p))
    return LatentDiffusion(ae, unet.eval(), cond, Schedule.scaled_linear(1000, 0.0015, 0.0195), image_size=16).eval()


@pytest.mark.parametrize("regularizer", ["kl", "vq"])
def test_exported_pipeline_samples_the_kits_images(regularizer, tmp_path):
    from diffusers import DiffusionPipeline

    ldm = small_ldm(regularizer)
    interop.to_diffusers(ldm, tmp_path / "pipe")
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "pipe")
    assert type(pipe).__name__ == "LDMPipeline"
    assert type(pipe.vqvae).__name__ == ("AutoencoderKL" if regularizer == "kl" else "VQModel")
    pipe.set_progress_bar_config(disable=True)
    ours = ldm.sample(2, steps=10, generator=torch.Generator().manual_seed(3))
    theirs = pipe(batch_size=2, num_inference_steps=10, generator=torch.Generator().manual_seed(3), output_type="np")
    torch.testing.assert_close(torch.from_numpy(theirs.images).permute(0, 3, 1, 2), (ours + 1) / 2,
                               atol=1e-4, rtol=0)


def test_conditional_export_and_the_unet_round_trip(tmp_path):
    from diffusers import UNet2DConditionModel, UNet2DModel

    ldm = small_ldm(conditional=True)
    out = interop.to_diffusers(ldm, tmp_path / "cond")
    unet = UNet2DConditionModel.from_pretrained(out / "unet")
    assert (out / "conditioner" / "config.json").is_file() and "encoder_hidden_states" in (out / "README.md").read_text()
    z, t = torch.randn(2, 3, 4, 4), torch.tensor([5, 900])
    cond = ldm.condition({"label": torch.tensor([0, 3])}, 2)
    with torch.no_grad():
        eps = ldm.denoiser(z, t, cond)
        torch.testing.assert_close(unet(z, t, encoder_hidden_states=cond.context).sample, eps, atol=1e-5, rtol=1e-5)
        back = interop.from_diffusers(out)  # folder with unet/ -> the kit's UNet, the same function
        torch.testing.assert_close(back(z, t, cond.context), eps, atol=1e-6, rtol=0)
    uncond = small_ldm().unet
    exported = interop.unet_to_diffusers(uncond, 4)
    assert isinstance(exported, UNet2DModel)
    with torch.no_grad():
        torch.testing.assert_close(interop.from_diffusers(exported)(z, t), uncond(z, t), atol=1e-6, rtol=0)
    native = ref.randomize(UNet2DModel(block_out_channels=(32, 64, 96, 128), attention_head_dim=32, sample_size=8), 9)
    with torch.no_grad():  # a diffusers-made UNet2DModel (the layout of its LDM checkpoints, reduced width)
        z8, kit = torch.randn(2, 3, 8, 8), interop.from_diffusers(native.eval())
        torch.testing.assert_close(kit(z8, t), native(z8, t).sample, atol=1e-5, rtol=1e-5)
    assert kit.config.attention_resolutions == (2, 4, 8) and kit.config.norm_eps == 1e-5
    churches = interop.unet_config(UNETS["lsun_churches256"])
    with pytest.raises(ValueError, match="resblock_updown"):
        interop.unet_to_diffusers(UNet(dataclasses.replace(churches, model_channels=32)))
