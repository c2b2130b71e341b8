"""The kit's LDMs out to diffusers, and diffusers UNets back into the kit (the API is `ldm_lite.interop`).

    to_diffusers(ldm, directory)     unconditional: an `LDMPipeline` folder (UNet2DModel + AutoencoderKL / VQModel +
                                     DDIMScheduler at the kit's DDIM conventions); conditional: `unet/`
                                     (UNet2DConditionModel), `vqvae/`, `scheduler/` and the kit's `conditioner/`
    from_diffusers(source)           a UNet2DModel / UNet2DConditionModel (or its folder) -> the kit's `UNet`

Key names: the kit's UNet maps onto diffusers' by renaming (`_UNET_TO_DIFFUSERS`), its fused q/k/v (self-attention)
and k/v (cross-attention) projections split into diffusers' separate ones. Tested with diffusers 0.42.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from .autoencoder import _TO_DIFFUSERS, Autoencoder, diffusers_config
from .autoencoder import to_diffusers as kl_to_diffusers
from .checkpoint import CheckpointError, atomic_dir, rename_key
from .ldm import LatentDiffusion
from .unet import UNet, UNetConfig

# The kit's UNet in diffusers' names: UNet2DModel (self-attention) or UNet2DConditionModel (cross-attention, with
# use_linear_projection=True since the kit's SpatialTransformer projects with Linear layers).

_UNET_TO_DIFFUSERS = [
    (r"^time_mlp\.0\.", "time_embedding.linear_1."),
    (r"^time_mlp\.2\.", "time_embedding.linear_2."),
    (r"^norm_out\.", "conv_norm_out."),
    (r"^down\.(\d+)\.(\d+)\.res\.", r"down_blocks.\1.resnets.\2."),
    (r"^down\.(\d+)\.(\d+)\.attn\.", r"down_blocks.\1.attentions.\2."),
    (r"^downsample\.(\d+)\.", r"down_blocks.\1.downsamplers.0."),
    (r"^up\.(\d+)\.(\d+)\.res\.", r"up_blocks.\1.resnets.\2."),
    (r"^up\.(\d+)\.(\d+)\.attn\.", r"up_blocks.\1.attentions.\2."),
    (r"^upsample\.(\d+)\.", r"up_blocks.\1.upsamplers.0."),
    (r"^mid1\.res\.", "mid_block.resnets.0."),
    (r"^mid1\.attn\.", "mid_block.attentions.0."),
    (r"^mid2\.res\.", "mid_block.resnets.1."),
    (r"\.resnets\.(\d+)\.emb\.", r".resnets.\1.time_emb_proj."),
    (r"\.skip\.", ".conv_shortcut."),
]
_SELF_ATTENTION_TO_DIFFUSERS = [  # AttentionBlock -> UNet2DModel's Attention (with its group norm)
    (r"(attentions\.\d+)\.norm\.", r"\1.group_norm."),
    (r"(attentions\.\d+)\.attn\.to_out\.", r"\1.to_out.0."),
    (r"(attentions\.\d+)\.attn\.to_qkv\.", r"\1.to_qkv."),
]
_TRANSFORMER_TO_DIFFUSERS = [  # SpatialTransformer -> Transformer2DModel
    (r"\.blocks\.(\d+)\.", r".transformer_blocks.\1."),
    (r"\.(attn1|attn2)\.to_out\.", r".\1.to_out.0."),
    (r"\.ff\.0\.proj\.", ".ff.net.0.proj."),
    (r"\.ff\.2\.", ".ff.net.2."),
]


def _diffusers_keys(name: str, self_attention: bool) -> tuple[str, ...]:
    """The diffusers key(s) of one kit UNet tensor; a fused q/k/v (or k/v) projection splits into several."""
    key = rename_key(name, _UNET_TO_DIFFUSERS + (_SELF_ATTENTION_TO_DIFFUSERS if self_attention
                                                 else _TRANSFORMER_TO_DIFFUSERS))
    for fused, parts in ((".to_qkv.", "qkv"), (".to_kv.", "kv")):
        if fused in key:
            return tuple(key.replace(fused, f".to_{p}.") for p in parts)
    return (key,)


def _attention_heads(c: UNetConfig) -> list[int]:
    widths = [c.model_channels * m for m in c.channel_mult]
    return [c.num_heads if c.num_heads is not None else w // c.head_dim for w in widths]


def diffusers_unet_config(c: UNetConfig, sample_size: int) -> tuple[str, dict]:
    """(diffusers class name, its keyword arguments) for an equivalent of the kit's UNet."""
    if c.resblock_updown:
        raise ValueError("resblock_updown=True has no conversion to diffusers here (its down blocks resample with "
                         "convs); export a UNet with resblock_updown=False")
    levels = range(len(c.channel_mult))
    widths = tuple(c.model_channels * m for m in c.channel_mult)
    common = dict(sample_size=sample_size, in_channels=c.in_channels + c.concat_channels, out_channels=c.out_channels,
                  block_out_channels=widths, layers_per_block=c.num_res_blocks, norm_num_groups=c.norm_groups,
                  norm_eps=c.norm_eps, resnet_time_scale_shift="scale_shift" if c.scale_shift_norm else "default",
                  dropout=c.dropout, flip_sin_to_cos=True, freq_shift=0, act_fn="silu", downsample_padding=1)
    if c.context_dim is None:
        head_dims = {w // h for w, h in zip(widths, _attention_heads(c))}
        if len(head_dims) != 1:
            raise ValueError(f"num_heads={c.num_heads} gives heads of different widths {sorted(head_dims)}; "
                             "diffusers' UNet2DModel has one attention_head_dim")
        return "UNet2DModel", dict(
            common, attention_head_dim=head_dims.pop(), attn_norm_num_groups=c.norm_groups, add_attention=True,
            down_block_types=tuple("AttnDownBlock2D" if 2**lv in c.attention_resolutions else "DownBlock2D"
                                   for lv in levels),
            up_block_types=tuple("AttnUpBlock2D" if 2**lv in c.attention_resolutions else "UpBlock2D"
                                 for lv in reversed(levels)))
    return "UNet2DConditionModel", dict(
        common, cross_attention_dim=c.context_dim, attention_head_dim=tuple(_attention_heads(c)),  # = heads there
        use_linear_projection=True, transformer_layers_per_block=c.transformer_depth,
        down_block_types=tuple("CrossAttnDownBlock2D" if 2**lv in c.attention_resolutions else "DownBlock2D"
                               for lv in levels),
        up_block_types=tuple("CrossAttnUpBlock2D" if 2**lv in c.attention_resolutions else "UpBlock2D"
                             for lv in reversed(levels)))


def unet_to_diffusers(unet: UNet, sample_size: int = 8):
    """An equivalent diffusers `UNet2DModel` (self-attention) or `UNet2DConditionModel` (cross-attention)."""
    import diffusers  # local in every function here: diffusers is an optional (test) dependency

    cls_name, kwargs = diffusers_unet_config(unet.config, sample_size)
    model = getattr(diffusers, cls_name)(**kwargs)
    theirs = model.state_dict()
    state = {}
    for name, value in unet.state_dict().items():
        keys = _diffusers_keys(name, unet.config.context_dim is None)
        for key, piece in zip(keys, value.chunk(len(keys), 0)):
            state[key] = piece.contiguous()
    for key in theirs:  # the kit's self-attention has no q/k/v bias by default: diffusers' are zero then
        if key not in state and re.search(r"\.to_[qkv]\.bias$", key):
            state[key] = torch.zeros_like(theirs[key])
    model.load_state_dict(state, strict=True)
    return model.to(next(unet.parameters()).device).eval()


def unet_from_diffusers(model) -> UNet:
    """The kit's `UNet` with the weights of a diffusers `UNet2DModel` / `UNet2DConditionModel` of the layout the kit
    has (the inverse of `unet_to_diffusers`; e.g. a UNet exported from the kit, or diffusers' LDM checkpoints)."""
    c = model.config
    kind = type(model).__name__
    widths = list(c.block_out_channels)
    if kind not in ("UNet2DModel", "UNet2DConditionModel") or any(w % widths[0] for w in widths):
        raise ValueError(f"{kind} with block_out_channels {widths} does not convert: a UNet2DModel or "
                         "UNet2DConditionModel whose widths are multiples of the first is needed")
    attends = [not t.startswith(("DownBlock2D",)) for t in c.down_block_types]
    if kind == "UNet2DConditionModel":
        if not c.use_linear_projection or c.class_embed_type or c.addition_embed_type or c.time_cond_proj_dim:
            raise ValueError("only a UNet2DConditionModel with use_linear_projection=True and no extra embeddings "
                             "converts (the kit's SpatialTransformer projects with Linear layers)")
        heads = c.num_attention_heads or c.attention_head_dim
        heads = list(heads) if isinstance(heads, (list, tuple)) else [heads] * len(widths)
        depth = c.transformer_layers_per_block
        depth = depth if isinstance(depth, int) else int(depth[0])
        head_dims = {w // h for w, h in zip(widths, heads)}
        extra = dict(context_dim=c.cross_attention_dim, transformer_depth=depth)
    else:
        head_dims = {c.attention_head_dim or widths[-1]}
        extra = dict(attention_qkv_bias=True)
    fixed = None
    if len(head_dims) != 1:  # a fixed head count instead of a fixed head width
        if len(set(heads)) != 1:
            raise ValueError(f"attention heads {heads} are neither of one width nor one count")
        fixed = heads[0]
    config = UNetConfig(
        in_channels=c.in_channels, out_channels=c.out_channels, model_channels=widths[0],
        channel_mult=tuple(w // widths[0] for w in widths), num_res_blocks=c.layers_per_block,
        attention_resolutions=tuple(2**lv for lv, a in enumerate(attends) if a),
        head_dim=min(head_dims), num_heads=fixed, dropout=float(getattr(c, "dropout", 0.0)),
        scale_shift_norm=c.resnet_time_scale_shift == "scale_shift", norm_groups=c.norm_num_groups,
        norm_eps=c.norm_eps, **extra)
    unet = UNet(config)
    theirs = model.state_dict()
    state = {}
    for name in unet.state_dict():
        keys = _diffusers_keys(name, config.context_dim is None)
        missing = [k for k in keys if k not in theirs]
        if missing:
            raise CheckpointError(f"the diffusers model has no {missing[0]!r} that ldm_lite's {name!r} needs; its "
                                  "layout differs from the kit's UNet")
        state[name] = torch.cat([theirs[k] for k in keys], 0)
    unet.load_state_dict(state)
    return unet.eval()


def _scheduler(ldm: LatentDiffusion):
    from diffusers import DDIMScheduler

    s = ldm.schedule
    names = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}
    kwargs = dict(s.params) if s.name != "cosine" else {}
    if s.name == "cosine" and s.params != {"s": 0.008, "max_beta": 0.999}:
        raise ValueError(f"cosine schedule with {s.params} has no DDIMScheduler twin (diffusers fixes s=0.008)")
    # the kit's DDIM defaults: "leading" spacing, no offset, ᾱ_final = 1, no clipping (ldm_lite.samplers.ddim)
    return DDIMScheduler(num_train_timesteps=s.T, beta_schedule=names[s.name], clip_sample=False,
                         set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading",
                         prediction_type="epsilon" if ldm.config.prediction == "eps" else "v_prediction", **kwargs)


def first_stage_to_diffusers(ae: Autoencoder, sample_size: int):
    """An `AutoencoderKL` (KL) or `VQModel` (VQ) with the kit autoencoder's weights and scale factor."""
    if not isinstance(ae, Autoencoder):
        raise ValueError("a pixel-space model (IdentityAutoencoder) has no first stage to export")
    if ae.config.regularizer == "kl":
        return kl_to_diffusers(ae, sample_size)
    from diffusers import VQModel

    kwargs = diffusers_config(dataclasses.replace(ae.config, regularizer="kl"), float(ae.scale_factor), sample_size)
    vq = VQModel(**kwargs, num_vq_embeddings=ae.config.codebook_size, vq_embed_dim=ae.config.latent_channels)
    state = {rename_key(k, _TO_DIFFUSERS): v for k, v in ae.state_dict().items() if k not in ("scale_factor",
                                                                                          "quantizer.ema_count")}
    state["quantize.embedding.weight"] = state.pop("quantizer.codebook.weight")
    vq.load_state_dict(state, strict=True)
    return vq.eval()


DIFFUSERS_README = """# {name}: exported from ldm_lite

Written by `ldm_lite.interop.to_diffusers` (tested with diffusers {version}).

{body}
The scheduler is `DDIMScheduler` set to ldm_lite's DDIM conventions ("leading" spacing, `set_alpha_to_one=True`,
no clipping), so `num_inference_steps=N` takes the same steps as `ldm.sample(sampler="ddim", steps=N)`.
"""


def to_diffusers(model: LatentDiffusion, directory: str | os.PathLike) -> Path:
    """Write `model` as a diffusers folder, atomically.

    Unconditional: an `LDMPipeline` folder (unet = UNet2DModel, vqvae = the first stage as AutoencoderKL or VQModel,
    scheduler = DDIMScheduler), loaded by `diffusers.DiffusionPipeline.from_pretrained(directory)`. Conditional:
    `unet/` (UNet2DConditionModel), `vqvae/`, `scheduler/` and the kit's conditioner in `conditioner/`
    (`ldm_lite` folder; it computes the `encoder_hidden_states`), described in the folder's README.md.
    """
    import diffusers


    if not isinstance(model, LatentDiffusion):
        raise TypeError(f"to_diffusers exports a LatentDiffusion, got {type(model).__name__}")
    latent = model.config.image_size // model.autoencoder.f
    unet = unet_to_diffusers(model.unet, latent)
    vqvae = first_stage_to_diffusers(model.autoencoder, model.config.image_size)
    scheduler = _scheduler(model)
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(directory) as tmp:
        if model.conditioner is None:
            pipe = diffusers.LDMPipeline(vqvae=vqvae, unet=unet, scheduler=scheduler)
            pipe.save_pretrained(tmp)
            body = ("Unconditional: `DiffusionPipeline.from_pretrained(folder)` gives an `LDMPipeline`; "
                    "`pipe(batch_size=4, num_inference_steps=50, generator=torch.Generator().manual_seed(0))`.\n")
        else:
            unet.save_pretrained(tmp / "unet")
            vqvae.save_pretrained(tmp / "vqvae")
            scheduler.save_pretrained(tmp / "scheduler")
            model.conditioner.save_pretrained(tmp / "conditioner")
            body = (f"Conditional ({type(model.conditioner).__name__}): diffusers has no pipeline for it. "
                    "`UNet2DConditionModel.from_pretrained(folder / 'unet')` takes `encoder_hidden_states` = the "
                    "context (B, L, d) of the kit's conditioner, saved in `conditioner/` (load it with "
                    f"`ldm_lite.conditioning.CONDITIONERS['{type(model.conditioner).__name__}'].from_pretrained`); "
                    "decode ẑ_0 / scaling_factor with the first stage in `vqvae/`.\n")
        (tmp / "README.md").write_text(DIFFUSERS_README.format(name=directory.name, version=diffusers.__version__,
                                                               body=body))
    return directory


def from_diffusers(source: str | os.PathLike | Any) -> UNet:
    """The kit's `UNet` from a diffusers UNet: a `UNet2DModel` / `UNet2DConditionModel`, its folder, or a pipeline
    folder with a `unet/` subfolder."""
    if isinstance(source, (str, os.PathLike)):
        import diffusers

        path = Path(source)
        if (path / "unet" / "config.json").is_file():
            path = path / "unet"
        if not (path / "config.json").is_file():
            raise ValueError(f"{source} is not a diffusers UNet folder (no config.json, no unet/config.json)")
        cls_name = json.loads((path / "config.json").read_text()).get("_class_name")
        if cls_name not in ("UNet2DModel", "UNet2DConditionModel"):
            raise ValueError(f"{path} holds a {cls_name}, not a UNet2DModel or UNet2DConditionModel")
        source = getattr(diffusers, cls_name).from_pretrained(path)
    return unet_from_diffusers(source)
