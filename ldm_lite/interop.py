"""In and out of the kit: the paper's released checkpoints -> ldm_lite, and ldm_lite -> diffusers.

    from_compvis(ckpt, config)       a CompVis `latent-diffusion` checkpoint (.ckpt or .safetensors) + its config.yaml
                                     -> `Autoencoder` (a first stage) or `LatentDiffusion` (first stage + UNet + class
                                     embedder + schedule + scale factor)
    to_diffusers(model, directory)   a `LatentDiffusion` -> a folder `diffusers.DiffusionPipeline.from_pretrained` loads
    from_diffusers(directory)        a diffusers `UNet2DModel` / `UNet2DConditionModel` (or its folder) -> `UNet`
    (the diffusers direction lives in `ldm_lite.interop_diffusers`)

Reading a `.ckpt` never runs pickled code: `torch.load(weights_only=True)`, with the Lightning bookkeeping some released
checkpoints carry (e.g. the `ModelCheckpoint` callback class in the BSR super-resolution `.ckpt`) allow-listed as inert
stubs; any other global (a function, a class from elsewhere) refuses the file. Only `state_dict` is kept.

How the reference's modules map onto the kit's (the conversion is a renaming plus three reshapes):
    first stage   `encoder.down.{i}.block.{j}` -> `encoder.down.{i}.blocks.{j}`, `.attn.{j}` -> `.attns.{j}`,
                  `decoder.up.{i}` -> `decoder.up.{n-1-i}` (the kit lists decoder levels from the lowest resolution),
                  `mid.block_1/attn_1/block_2` -> `mid.res1/attn/res2`, `nin_shortcut` -> `skip`,
                  1x1-conv q/k/v/proj_out -> Linear, `quantize.embedding` -> `quantizer.codebook`
    UNet          `input_blocks`/`middle_block`/`output_blocks` (openaimodel's flat TimestepEmbedSequential list) ->
                  `down`/`mid1`,`mid2`/`up` blocks and `downsample`/`upsample`; the self-attention's fused qkv
                  conv is stored head by head ([q_h; k_h; v_h] for each head h, "legacy order"), the kit's as
                  [Q; K; V]: rows are permuted; the SpatialTransformer's separate to_q/to_k/to_v are concatenated
                  and its 1x1-conv proj_in/proj_out become Linear.
    schedule      `beta_schedule: linear` (CompVis' name; √β linear) -> `Schedule.scaled_linear(T, linear_start,
                  linear_end)`; the scale factor from the config, or from the checkpoint when `scale_by_std`.
What the reference's UNet needs from the kit's options (`UNetConfig`): `norm_eps=1e-5` (openaimodel's GroupNorm32),
`attention_qkv_bias=True`, `num_heads` when the config fixes the head count, `resblock_updown` (churches); and from
`AutoencoderConfig`: `attention_resolutions` (kl-f16/f32, vq-f8/f16 attend inside the levels).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .autoencoder import Autoencoder, AutoencoderConfig, IdentityAutoencoder, IdentityAutoencoderConfig
from .checkpoint import CheckpointError, load_weights, rename_key
from .conditioning import ClassConditioner, ClassConditionerConfig
from .interop_diffusers import from_diffusers, to_diffusers, unet_from_diffusers, unet_to_diffusers  # noqa: F401
from .ldm import LatentDiffusion, ScaleFactorWarning
from .schedule import Schedule
from .unet import UNet, UNetConfig

# Lightning keeps its own objects next to state_dict (callbacks keyed by class, loop state), and OmegaConf holds saved
# hyper-parameters: plain data, replaced by inert stubs
ALLOWED_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "omegaconf.")
FIRST_STAGES = ("AutoencoderKL", "VQModel", "VQModelInterface", "IdentityFirstStage")


def _need_yaml():
    try:
        import yaml  # local: PyYAML is optional (the interop extra)
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("reading a CompVis config.yaml needs PyYAML: pip install 'ldm-lite[interop]' "
                          "(or pip install pyyaml)") from None
    return yaml


# ----------------------------------------------------------------------------------------------- reading files


class InertStub:
    """Stands in for an allow-listed Lightning object while unpickling: takes any arguments and state, does nothing."""

    qualified_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> InertStub:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<inert stub for {self.qualified_name}>"


def _stub(name: str) -> tuple[type, str]:
    return type(name.rsplit(".", 1)[-1], (InertStub,), {"qualified_name": name}), name


def load_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """The tensors of a CompVis checkpoint: `state_dict` of a Lightning `.ckpt`, or a `.safetensors` file.

    The `.ckpt` is read with `torch.load(weights_only=True)`; the Lightning objects in it (module names starting with
    one of `ALLOWED_PREFIXES`) are replaced by inert stubs, and a file holding any other pickled global (a function,
    a class from elsewhere) is refused before anything is unpickled."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist; pass the downloaded .ckpt (or a .safetensors conversion)")
    if path.suffix == ".safetensors":
        return load_weights(path)
    if not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
        raise CheckpointError(f"reading {path} safely needs torch >= 2.6 (pip install 'ldm-lite[interop]'), or "
                              "convert the checkpoint to .safetensors")
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as e:  # not a zip-format torch file
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({e}); pass a .ckpt saved by torch >= 1.6 "
                              "or a .safetensors file") from None
    refused = [g for g in unsafe if not g.startswith(ALLOWED_PREFIXES)]
    if refused:
        raise CheckpointError(f"{path} holds pickled globals {refused[:4]} besides Lightning's bookkeeping; refusing to "
                              "unpickle it (it could run code). Convert the checkpoint to .safetensors where you trust it")
    try:
        with torch.serialization.safe_globals([_stub(g) for g in unsafe]):
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # tensors stay on disk until used
    except Exception as e:
        raise CheckpointError(f"{path} could not be read with weights_only=True ({str(e).splitlines()[0]})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{path} holds no state_dict (got {type(obj).__name__}); is it a model checkpoint?")
    return {k: v for k, v in state.items() if isinstance(v, Tensor)}


def read_compvis_config(config: str | os.PathLike | Mapping) -> dict:
    """The `model` section of a CompVis config.yaml (a path, or the already parsed mapping)."""
    if not isinstance(config, Mapping):
        path = Path(config)
        if not path.is_file():
            raise ValueError(f"config {path} does not exist; pass the model's config.yaml")
        yaml = _need_yaml()
        try:
            config = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"config {path} is not valid YAML ({str(e).splitlines()[0]})") from None
    model = config.get("model", config) if isinstance(config, Mapping) else None
    if not isinstance(model, Mapping) or "target" not in model:
        raise ValueError("the config has no model.target; pass a CompVis latent-diffusion config.yaml "
                         "(configs/autoencoder/*.yaml, models/first_stage_models/*/config.yaml, models/ldm/*/config.yaml)")
    return dict(model)


def _kind(target: str) -> str:
    return str(target).rsplit(".", 1)[-1]


# ----------------------------------------------------------------------------------------------- key mapping


@dataclass(frozen=True)
class _Part:
    """How one kit tensor is made of checkpoint tensors: `combine(theirs)`; `shapes(ours)` = the shapes expected."""

    theirs: tuple[str, ...]
    combine: Callable[[list[Tensor]], Tensor]
    shapes: Callable[[tuple[int, ...]], list[tuple[int, ...]]]


def _copy(key: str) -> _Part:
    return _Part((key,), lambda ts: ts[0], lambda s: [s])


def _conv1x1(key: str, dims: int) -> _Part:
    """A 1x1 conv weight (out, in, 1[, 1]) as the kit's Linear weight (out, in)."""
    return _Part((key,), lambda ts: ts[0].reshape(ts[0].shape[:2]), lambda s: [s + (1,) * dims])


def _weight_or_bias(key: str, suffix: str, dims: int) -> _Part:
    return _conv1x1(key, dims) if suffix == "weight" else _copy(key)


def _concat(keys: tuple[str, ...]) -> _Part:
    n = len(keys)
    return _Part(keys, lambda ts: torch.cat(ts, 0), lambda s: [(s[0] // n, *s[1:])] * n)


def _legacy_qkv(key: str, heads: int, suffix: str) -> _Part:
    """openaimodel's fused qkv conv1d in the legacy order (rows: head, then q/k/v, then channel) -> [Q; K; V]."""

    def combine(ts: list[Tensor]) -> Tensor:
        w = ts[0].reshape(ts[0].shape[0], -1) if suffix == "weight" else ts[0][:, None]  # (3C, C) or (3C, 1)
        w = w.reshape(heads, 3, -1, w.shape[-1]).transpose(0, 1).reshape(-1, w.shape[-1])
        return w if suffix == "weight" else w[:, 0]

    return _Part((key,), combine, lambda s: [s + (1,)] if suffix == "weight" else [s])


def _convert(ours: Mapping[str, Tensor], parts: dict[str, _Part], state: Mapping[str, Tensor], prefix: str,
             strict: tuple[str, ...], what: str) -> dict[str, Tensor]:
    """Build the kit's tensors from the checkpoint's; raise naming the first key (in checkpoint order) that does not
    fit: missing, of another shape, or (under a `strict` prefix) left over."""
    order = {k: i for i, k in enumerate(state)}
    problems: list[tuple[float, str]] = []
    used: set[str] = set()
    out = {}
    for name, part in parts.items():
        keys = [prefix + k for k in part.theirs]
        expected = part.shapes(tuple(ours[name].shape))
        bad = False
        for key, shape in zip(keys, expected):
            used.add(key)
            if key not in state:
                problems.append((float("inf"), f"{what}: the checkpoint has no key {key!r}, which the config needs "
                                               f"(shape {shape}); is this the config of this checkpoint?"))
                bad = True
            elif tuple(state[key].shape) != shape:
                problems.append((order[key], f"{what}: checkpoint key {key!r} has shape {tuple(state[key].shape)} but "
                                             f"the config implies {shape}; is this the config of this checkpoint?"))
                bad = True
        if not bad:
            out[name] = part.combine([state[k] for k in keys]).to(ours[name].dtype)
    for key in state:
        if key.startswith(tuple(prefix + s for s in strict)) and key not in used:
            problems.append((order[key], f"{what}: checkpoint key {key!r} has no place in the model the config "
                                         "describes; is this the config of this checkpoint?"))
    if problems:
        raise CheckpointError(min(problems, key=lambda p: p[0])[1])
    return out


# ------------------------------------------------------------------ first stage


def autoencoder_config(target: str, params: Mapping) -> AutoencoderConfig:
    """`AutoencoderConfig` of a CompVis first stage (`AutoencoderKL`, `VQModel`, `VQModelInterface`) from its params."""
    kind = _kind(target)
    dd = params.get("ddconfig")
    if kind not in FIRST_STAGES[:3] or not isinstance(dd, Mapping):
        raise ValueError(f"first stage {target!r} is not a CompVis AutoencoderKL / VQModel with a ddconfig")
    mult = tuple(int(m) for m in dd["ch_mult"])
    z, embed = int(dd["z_channels"]), int(params["embed_dim"])
    if z != embed:
        raise ValueError(f"embed_dim={embed} differs from z_channels={z}; ldm_lite's quant convs keep the latent width "
                         "(every released first stage has embed_dim = z_channels)")
    if mult[0] != 1:
        raise ValueError(f"ch_mult {list(mult)} must start with 1 for ldm_lite's encoder (its conv_in makes ch*mult[0])")
    if int(dd.get("out_ch", dd["in_channels"])) != int(dd["in_channels"]):
        raise ValueError(f"out_ch={dd['out_ch']} differs from in_channels={dd['in_channels']}; ldm_lite decodes to the "
                         "input's channels")
    attn_type = dd.get("attn_type", "vanilla")
    if attn_type not in ("vanilla", "none") or dd.get("use_linear_attn"):
        raise ValueError(f"attn_type={attn_type!r} (linear attention) has no twin in ldm_lite; 'vanilla' and 'none' do")
    if kind != "AutoencoderKL" and params.get("remap") is not None:
        raise ValueError("a VQ first stage with a remapped codebook (remap=...) is not supported")
    resolution = int(dd.get("resolution", 256))
    attn_res = {int(r) for r in dd.get("attn_resolutions", ())}
    rates = tuple(2**i for i in range(len(mult)) if resolution // 2**i in attn_res)  # where the reference attends
    common = dict(in_channels=int(dd["in_channels"]), base_channels=int(dd["ch"]), channel_mult=mult,
                  num_res_blocks=int(dd["num_res_blocks"]), latent_channels=z, attention=attn_type == "vanilla",
                  attention_resolutions=rates, norm_groups=32)
    if kind == "AutoencoderKL":
        return AutoencoderConfig(regularizer="kl", **common)
    # taming's VectorQuantizer2 with legacy=True trained LDM's VQ models; no dead-code restarts in the reference
    return AutoencoderConfig(regularizer="vq", codebook_size=int(params["n_embed"]), vq_beta=0.25, vq_legacy=True,
                             vq_latent="pre_quant", dead_code_threshold=0.0, **common)


_AE_RULES = [
    (r"^(encoder|decoder)\.mid\.res1\.", r"\1.mid.block_1."),
    (r"^(encoder|decoder)\.mid\.res2\.", r"\1.mid.block_2."),
    (r"^(encoder|decoder)\.mid\.attn\.", r"\1.mid.attn_1."),
    (r"\.blocks\.(\d+)\.", r".block.\1."),
    (r"\.attns\.(\d+)\.", r".attn.\1."),
    (r"\.skip\.", ".nin_shortcut."),
    (r"^encoder\.down\.(\d+)\.resample\.", r"encoder.down.\1.downsample."),
    (r"^decoder\.up\.(\d+)\.resample\.", r"decoder.up.\1.upsample."),
    (r"\.proj\.(weight|bias)$", r".proj_out.\1"),
    (r"^quantizer\.codebook\.", "quantize.embedding."),
]


def _autoencoder_parts(ae: Autoencoder) -> dict[str, _Part]:
    n = len(ae.config.channel_mult)
    parts = {}
    for name in ae.state_dict():
        if name in ("scale_factor", "quantizer.ema_count"):  # not in the reference: the scale comes from the LDM
            continue
        key = re.sub(r"^decoder\.up\.(\d+)\.", lambda m: f"decoder.up.{n - 1 - int(m.group(1))}.", name)
        key = rename_key(key, _AE_RULES)
        is_attn_linear = re.search(r"\.(mid\.attn_1|attn\.\d+)\.(q|k|v|proj_out)\.weight$", key)
        parts[name] = _conv1x1(key, 2) if is_attn_linear else _copy(key)
    return parts


def convert_first_stage(state: Mapping[str, Tensor], first_stage: Mapping, prefix: str = "") -> Autoencoder:
    """An `Autoencoder` from the tensors of a first stage (`first_stage = {"target": ..., "params": ...}`, a config's
    model section or an LDM's first_stage_config), read at `prefix` + the reference's key."""
    target, params = first_stage["target"], first_stage.get("params", {}) or {}
    if _kind(target) == "IdentityFirstStage":
        return IdentityAutoencoder(IdentityAutoencoderConfig())
    ae = Autoencoder(autoencoder_config(target, params)).eval()
    own = ae.state_dict()
    converted = _convert(own, _autoencoder_parts(ae), state, prefix,
                         ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "quantize."), "first stage")
    ae.load_state_dict({**own, **converted})
    return ae


# ------------------------------------------------------------------ UNet


def unet_config(params: Mapping) -> UNetConfig:
    """`UNetConfig` of an openaimodel `UNetModel` from its params (LDM's unet_config)."""
    unsupported = {"num_classes": "ADM-style class embedding added to t (label_emb)",
                   "n_embed": "codebook-id prediction", "use_fp16": None}
    for key, why in unsupported.items():
        if why and params.get(key) is not None:
            raise ValueError(f"unet_config has {key}={params[key]!r} ({why}), which ldm_lite's UNet does not have")
    if int(params.get("dims", 2)) != 2 or not params.get("conv_resample", True):
        raise ValueError("only 2-D UNets with learned (conv) resampling convert")
    heads, head_channels = int(params.get("num_heads", -1)), int(params.get("num_head_channels", -1))
    if int(params.get("num_heads_upsample", -1)) not in (-1, heads):
        raise ValueError("num_heads_upsample different from num_heads is not supported")
    if heads == -1 and head_channels == -1:
        raise ValueError("unet_config sets neither num_heads nor num_head_channels")
    context = params.get("context_dim")
    if bool(params.get("use_spatial_transformer", False)) != (context is not None):
        raise ValueError("use_spatial_transformer and context_dim must come together (as the reference asserts)")
    if context is not None and not isinstance(context, int):
        raise ValueError(f"context_dim={context!r}: one width for every level is supported")
    return UNetConfig(
        in_channels=int(params["in_channels"]), out_channels=int(params["out_channels"]),
        model_channels=int(params["model_channels"]), channel_mult=tuple(int(m) for m in params["channel_mult"]),
        num_res_blocks=int(params["num_res_blocks"]),
        attention_resolutions=tuple(int(r) for r in params["attention_resolutions"]),
        head_dim=head_channels if head_channels != -1 else 32, num_heads=None if head_channels != -1 else heads,
        context_dim=context, transformer_depth=int(params.get("transformer_depth", 1)),
        dropout=float(params.get("dropout", 0.0)), scale_shift_norm=bool(params.get("use_scale_shift_norm", False)),
        resblock_updown=bool(params.get("resblock_updown", False)), norm_groups=32, norm_eps=1e-5,
        attention_qkv_bias=True)


_RESBLOCK = {"norm1": "in_layers.0", "conv1": "in_layers.2", "emb": "emb_layers.1", "norm2": "out_layers.0",
             "conv2": "out_layers.3", "skip": "skip_connection"}
_TRANSFORMER = {"norm1": "norm1", "norm2": "norm2", "norm3": "norm3", "attn1.to_out": "attn1.to_out.0",
                "attn2.to_out": "attn2.to_out.0", "attn2.to_q": "attn2.to_q", "ff.0.proj": "ff.net.0.proj",
                "ff.2": "ff.net.2"}

# each maps (reference prefix, the kit's key inside the module, the kit's module) -> _Part


def _plain(theirs: str, rest: str, attn: Any) -> _Part:
    return _copy(theirs + rest)


def _resblock(theirs: str, rest: str, attn: Any) -> _Part:
    layer, suffix = rest.rsplit(".", 1)
    return _copy(f"{theirs}{_RESBLOCK[layer]}.{suffix}")


def _downsample(theirs: str, rest: str, attn: Any) -> _Part:
    return _copy(theirs + rest.replace("conv.", "op."))  # openaimodel's Downsample calls its conv `op`


def _attention_block(legacy_order: bool) -> Callable[[str, str, Any], _Part]:
    def part(theirs: str, rest: str, attn: Any) -> _Part:
        layer, suffix = rest.rsplit(".", 1)
        if layer == "norm":
            return _copy(theirs + rest)
        if layer == "attn.to_qkv":
            key = f"{theirs}qkv.{suffix}"
            return _legacy_qkv(key, attn.attn.heads, suffix) if legacy_order else _weight_or_bias(key, suffix, 1)
        return _weight_or_bias(f"{theirs}proj_out.{suffix}", suffix, 1)  # attn.to_out

    return part


def _spatial_transformer(theirs: str, rest: str, attn: Any) -> _Part:
    layer, suffix = rest.rsplit(".", 1)
    if layer == "norm":
        return _copy(theirs + rest)
    if layer in ("proj_in", "proj_out"):  # 1x1 convs in the reference
        return _weight_or_bias(theirs + rest, suffix, 2)
    _, d, sub = layer.split(".", 2)  # "blocks", depth index, layer inside the transformer block
    base = f"{theirs}transformer_blocks.{d}."
    if sub == "attn1.to_qkv":
        return _concat(tuple(f"{base}attn1.to_{s}.{suffix}" for s in "qkv"))
    if sub == "attn2.to_kv":
        return _concat(tuple(f"{base}attn2.to_{s}.{suffix}" for s in "kv"))
    return _copy(f"{base}{_TRANSFORMER[sub]}.{suffix}")


def _unet_layout(c: UNetConfig, legacy_order: bool) -> list[tuple[str, str, Callable[[str, str, Any], _Part]]]:
    """(kit prefix, reference prefix, part maker) for every module of the UNet, walking openaimodel's flat lists."""
    down = _resblock if c.resblock_updown else _downsample
    up = _resblock if c.resblock_updown else _plain
    attn = _spatial_transformer if c.context_dim is not None else _attention_block(legacy_order)
    layout = [("conv_in.", "input_blocks.0.0.", _plain), ("time_mlp.", "time_embed.", _plain),
              ("norm_out.", "out.0.", _plain), ("conv_out.", "out.2.", _plain)]
    levels, i = len(c.channel_mult), 1
    for level in range(levels):
        for j in range(c.num_res_blocks):
            layout.append((f"down.{level}.{j}.res.", f"input_blocks.{i}.0.", _resblock))
            layout.append((f"down.{level}.{j}.attn.", f"input_blocks.{i}.1.", attn))
            i += 1
        if level < levels - 1:
            layout.append((f"downsample.{level}.", f"input_blocks.{i}.0.", down))
            i += 1
    layout += [("mid1.res.", "middle_block.0.", _resblock), ("mid1.attn.", "middle_block.1.", attn),
               ("mid2.res.", "middle_block.2.", _resblock)]
    k = 0
    for u, level in enumerate(reversed(range(levels))):
        attends = 2**level in c.attention_resolutions
        for j in range(c.num_res_blocks + 1):
            layout.append((f"up.{u}.{j}.res.", f"output_blocks.{k}.0.", _resblock))
            layout.append((f"up.{u}.{j}.attn.", f"output_blocks.{k}.1.", attn))
            if level > 0 and j == c.num_res_blocks:
                layout.append((f"upsample.{u}.", f"output_blocks.{k}.{1 + attends}.", up))
            k += 1
    return layout


def _unet_parts(unet: UNet, legacy_order: bool = True) -> dict[str, _Part]:
    layout = sorted(_unet_layout(unet.config, legacy_order), key=lambda p: -len(p[0]))  # longest prefix first
    parts = {}
    for name in unet.state_dict():
        ours, theirs, make = next(p for p in layout if name.startswith(p[0]))
        parts[name] = make(theirs, name[len(ours):], unet.get_submodule(ours[:-1]))
    return parts


def convert_unet(state: Mapping[str, Tensor], unet_params: Mapping, prefix: str = "model.diffusion_model.") -> UNet:
    """A `UNet` from the tensors of an openaimodel `UNetModel` (`unet_params` = an LDM's unet_config.params)."""
    unet = UNet(unet_config(unet_params)).eval()
    legacy = not unet_params.get("use_new_attention_order", False)
    unet.load_state_dict(_convert(unet.state_dict(), _unet_parts(unet, legacy), state, prefix, ("",), "UNet"))
    return unet


def _schedule(params: Mapping) -> Schedule:
    if params.get("given_betas") is not None:
        raise ValueError("given_betas is not supported; use a beta_schedule")
    T = int(params.get("timesteps", 1000))
    name = params.get("beta_schedule", "linear")
    start, end = float(params.get("linear_start", 1e-4)), float(params.get("linear_end", 2e-2))
    if name == "linear":  # CompVis' "linear" is linear in √β: diffusers' and ldm_lite's scaled_linear
        return Schedule.scaled_linear(T, start, end)
    if name == "sqrt_linear":  # linear in β
        return Schedule.linear(T, start, end)
    if name == "cosine":
        return Schedule.cosine(T, float(params.get("cosine_s", 8e-3)))
    raise ValueError(f"beta_schedule {name!r} is not supported; 'linear', 'sqrt_linear' and 'cosine' are")


def _class_embedder(cond: Mapping, null_class: bool | None) -> ClassConditioner:
    p = cond.get("params", {})
    n = int(p.get("n_classes", 1000))
    null = (n == 1001) if null_class is None else null_class  # cin256-v2: 1000 ImageNet classes + row 1000 = ∅
    return ClassConditioner(ClassConditionerConfig(num_classes=n - int(null), dim=int(p["embed_dim"]),
                                                   null_class=null)).eval()


TEXT_GAP = ("the text-to-image model's BERTEmbedder (x-transformers, 32 pre-norm layers) does not map onto ldm_lite's "
            "TextConditioner: (1) its attention projects the width-640 tokens to 8 heads x 64 = 512 channels (q/k/v "
            "without bias), where the kit's torch TransformerEncoderLayer keeps the model width in every head; (2) it "
            "attends to the [PAD] tokens of its 77-token prompts, which the kit masks; (3) its token table covers all "
            "30,522 BERT ids, the kit's only its training vocabulary. Convert its first stage alone with "
            "first_stage_only=True")


def _conditioner(params: Mapping, null_class: bool | None) -> ClassConditioner | None:
    cond = params.get("cond_stage_config")
    if cond == "__is_unconditional__" or cond is None:
        return None
    key = params.get("conditioning_key") or ("concat" if params.get("concat_mode", True) else "crossattn")
    kind = _kind(cond.get("target", "")) if isinstance(cond, Mapping) else str(cond)
    if kind == "ClassEmbedder" and key == "crossattn":
        return _class_embedder(cond, null_class)
    if kind == "BERTEmbedder":
        raise ValueError(TEXT_GAP)
    raise ValueError(f"conditioner {kind!r} with conditioning_key={key!r} is not supported: ldm_lite converts the "
                     "unconditional LDMs and the class-conditional ones (ClassEmbedder + crossattn); convert the first "
                     "stage alone with first_stage_only=True")


def from_compvis(ckpt: str | os.PathLike | Mapping[str, Tensor], config: str | os.PathLike | Mapping, *,
                 ema: bool | None = None,
                 first_stage_only: bool = False, null_class: bool | None = None) -> Autoencoder | LatentDiffusion:
    """A CompVis `latent-diffusion` checkpoint as an ldm_lite model, in eval mode.

    ckpt: the `.ckpt` (read without running pickled code), a `.safetensors` file of its state_dict, or the state
    dict itself.
    config: its config.yaml (path or parsed mapping). A first-stage config (`AutoencoderKL`, `VQModel`) gives an
    `Autoencoder` (keys with or without the `first_stage_model.` prefix); an LDM config a `LatentDiffusion` with the
    first stage, the UNet, the class embedder
    (`cond_stage_model.*`) when class-conditional, the config's schedule and its scale factor (from the checkpoint
    when `scale_by_std`). `first_stage_only=True` returns only the LDM's first stage.
    ema: the UNet's weights: None (default) the EMA copy (`model_ema.*`) when the checkpoint holds one, as the
    reference's sampling scripts use it (`ema_scope`), else `model.diffusion_model.*`; True: the EMA copy or an
    error; False: `model.diffusion_model.*`.
    null_class: whether the class embedder's last row is ∅ (default: when it has 1001 rows, as cin256-v2).

    To take the reference DDIMSampler's steps: `ldm.sample(sampler="ddim", offset=1, final_alpha_one=False, ...)`
    (its timesteps are range(0, T, T/steps) + 1 and its last ᾱ_prev is ᾱ_0); guidance as there: `guidance_scale`.

    Keys the kit does not need (the loss' LPIPS and discriminator, schedule buffers, EMA copies) are ignored; a
    key or shape that does not fit the config raises `CheckpointError` naming the checkpoint's key.
    """
    model = read_compvis_config(config)
    try:
        return _from_compvis(ckpt, model, ema, first_stage_only, null_class)
    except KeyError as e:  # a field the reference's configs always have
        raise ValueError(f"the config lacks the field {e.args[0]!r}; pass the model's own config.yaml") from None


def _from_compvis(ckpt, model: dict, ema: bool | None, first_stage_only: bool, null_class: bool | None):
    kind, params = _kind(model["target"]), model.get("params", {}) or {}
    read = (lambda: dict(ckpt)) if isinstance(ckpt, Mapping) else (lambda: load_state_dict(ckpt))
    if kind in FIRST_STAGES:
        state = read()
        prefix = "first_stage_model." if any(k.startswith("first_stage_model.") for k in state) else ""
        return convert_first_stage(state, model, prefix)
    if kind != "LatentDiffusion":
        raise ValueError(f"config target {model['target']!r} is neither a first stage {FIRST_STAGES} nor a "
                         "LatentDiffusion; pass a first-stage or an LDM config.yaml")
    if params.get("parameterization", "eps") != "eps":
        raise ValueError(f"parameterization={params['parameterization']!r}: only ε-prediction LDMs convert")
    fs = params.get("first_stage_config")
    if not isinstance(fs, Mapping):
        raise ValueError("the LDM config has no first_stage_config")
    conditioner = None if first_stage_only else _conditioner(params, null_class)  # refuse before reading the file
    state = read()
    ae = convert_first_stage(state, fs, "first_stage_model.")
    if first_stage_only:
        return ae
    ema_keys = {k: "model_ema." + k[len("model."):].replace(".", "") for k in state  # LitEma's flattened names
                if k.startswith("model.diffusion_model.")}
    missing = [v for v in ema_keys.values() if v not in state]
    if ema and missing:
        raise CheckpointError(f"ema=True but the checkpoint has no EMA copy ({missing[0]!r} is missing); "
                              "load it with ema=False")
    if ema or (ema is None and ema_keys and not missing):
        state = {**state, **{k: state[v] for k, v in ema_keys.items()}}
    unet = convert_unet(state, params["unet_config"]["params"])
    if conditioner is not None:
        conditioner.load_state_dict(_convert(conditioner.state_dict(), {"embedding.weight": _copy("embedding.weight")},
                                             state, "cond_stage_model.", ("",), "class embedder"))
    scale = float(params.get("scale_factor", 1.0))
    if params.get("scale_by_std", False):
        if "scale_factor" not in state:
            raise CheckpointError("the config has scale_by_std: true but the checkpoint holds no 'scale_factor'")
        scale = float(state["scale_factor"])
    if isinstance(ae, Autoencoder):
        ae.scale_factor.fill_(scale)
    f = ae.f
    with warnings.catch_warnings():  # the reference's VQ LDMs use scale factor 1.0 on purpose
        warnings.simplefilter("ignore", ScaleFactorWarning)
        ldm = LatentDiffusion(ae, unet, conditioner, _schedule(params), image_size=int(params.get("image_size", 64)) * f,
                              cond_drop_prob=0.1 if conditioner is not None and conditioner.config.null_class else 0.0)
    return ldm.eval()
