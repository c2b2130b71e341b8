"""The cache of the frozen text encoder's outputs (issue 25): `LatentCache(..., text_encoder=)` stores the frozen
MiniLM states of every distinct training caption once; `FrozenTextConditioner` then runs only its trained
projection. Loss, gradients, ∅ and resume must be those of encoding the captions every step."""

import pytest
import torch

from ldm_lite import datasets, recipes
from ldm_lite.autoencoder import IdentityAutoencoder
from ldm_lite.errors import UsageError
from ldm_lite.latents import LatentCache
from ldm_lite.ldm import LatentDiffusion
from ldm_lite.text import FrozenTextConditioner, FrozenTextConditionerConfig
from ldm_lite.train import train_ldm
from ldm_lite.unet import UNet, UNetConfig

D, L = 32, 16


def frozen_ldm(cond_drop_prob: float = 0.5) -> LatentDiffusion:
    torch.manual_seed(0)
    cond = FrozenTextConditioner(FrozenTextConditionerConfig(dim=D, max_length=L,
                                                             vocabulary=datasets.shapes_vocabulary()))
    unet = UNet(UNetConfig(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1,), num_res_blocks=1,
                           attention_resolutions=(1,), head_dim=32, context_dim=D))
    for p in unet.parameters():  # a non-trivial UNet, so the context changes the loss
        torch.nn.init.normal_(p, std=0.05)
    return LatentDiffusion(IdentityAutoencoder(), unet, cond, "cosine", image_size=16, cond_drop_prob=cond_drop_prob)


def data(n: int = 24):
    return datasets.shapes(16, n=n, seed=0, max_shapes=2)


def loss_and_grads(ldm: LatentDiffusion, batch: dict, seed: int = 3) -> tuple[torch.Tensor, dict]:
    ldm.train().zero_grad(set_to_none=True)
    loss = ldm.loss(batch, torch.Generator().manual_seed(seed))
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in ldm.named_parameters() if p.grad is not None}


def test_the_cache_holds_each_distinct_captions_frozen_states():
    ds = data(40)
    ldm = frozen_ldm()
    cond = ldm.conditioner
    cache = LatentCache(ds, ldm.autoencoder, progress=False, text_encoder=cond)
    captions = [ds[i]["caption"] for i in range(len(ds))]
    assert cache.text_states.shape == (len(set(captions)), L, 384) and len(set(captions)) < len(ds)
    idx = torch.tensor([5, 0, 5, 39])
    batch = cache.batch(idx)
    assert batch["caption"] == [captions[i] for i in idx]
    assert torch.allclose(batch["caption_states"], cond.token_states(batch["caption"]), atol=1e-5)
    assert torch.equal(cache[39]["caption_states"], batch["caption_states"][3])
    assert "caption_states" not in LatentCache(ds, ldm.autoencoder, progress=False).batch(idx)  # off by default


def test_loss_and_gradients_with_the_cache_equal_encoding_every_step():
    ds = data()
    ldm = frozen_ldm(cond_drop_prob=0.5)  # half the rows are ∅: dropout is exercised in the same draws
    plain = LatentCache(ds, ldm.autoencoder, progress=False)
    cached = LatentCache(ds, ldm.autoencoder, progress=False, text_encoder=ldm.conditioner)
    idx = torch.arange(3, 19)
    ref, ref_grads = loss_and_grads(ldm, plain.batch(idx))
    got, got_grads = loss_and_grads(ldm, cached.batch(idx))
    assert torch.allclose(got, ref, rtol=0, atol=1e-5)
    assert set(got_grads) == set(ref_grads) and any(k.startswith("conditioner.proj.") for k in got_grads)
    for k, ref_grad in ref_grads.items():  # the trained projection (and the UNet) get the gradients they got before
        scale = float(ref_grad.abs().max())  # gradients are ~1e-4 here: the tolerance is relative to each tensor's
        assert float((got_grads[k] - ref_grad).abs().max()) <= 1e-5 * scale, k
    assert ref_grads["conditioner.proj.1.weight"].abs().max() > 0
    _, no_drop = loss_and_grads(frozen_ldm(cond_drop_prob=0.0), cached.batch(idx))
    k = "conditioner.proj.1.weight"  # the dropout above replaced rows by ∅: the projection learns otherwise
    assert float((no_drop[k] - got_grads[k]).abs().max()) > 1e-2 * float(got_grads[k].abs().max())


def test_null_is_the_empty_prompt_computed_once():
    ldm = frozen_ldm()
    cond = ldm.conditioner
    calls = []
    original = FrozenTextConditioner.token_states
    cond.token_states = lambda prompts: calls.append(list(prompts)) or original(cond, prompts)
    a, b = cond.null(3).context, cond.null(5).context
    assert calls == [[""]]  # the frozen states of "" once; the projection every call
    assert torch.equal(a[0], b[4]) and torch.equal(a[0], cond.proj(original(cond, [""]))[0])
    with torch.no_grad():
        cond.proj[1].bias.add_(1.0)  # a training step changes ∅ through the projection
    assert torch.allclose(cond.null(1).context, a[:1] + 1.0, atol=1e-6)


def test_a_batch_without_cached_states_runs_the_encoder_and_bad_states_are_refused():
    ldm = frozen_ldm()
    cond = ldm.conditioner
    new = ["a large green cross above a small white star", "a small red circle"]  # sampling: not in any cache
    out = cond({"caption": new}).context
    assert torch.allclose(out, cond.proj(cond.token_states(new)), atol=1e-6)
    cached = cond({"caption": new, "caption_states": cond.token_states(new)}).context
    assert torch.allclose(cached, out, atol=1e-6)
    x = ldm.sample(prompts=new, steps=2, generator=torch.Generator().manual_seed(0), guidance_scale=2.0)
    assert x.shape == (2, 3, 16, 16) and torch.isfinite(x).all()
    with pytest.raises(ValueError, match=r"caption_states.*\(B, 16, 384\).*got \(2, 12, 384\)"):
        cond({"caption": new, "caption_states": torch.zeros(2, 12, 384)})  # another max_length's states
    with pytest.raises(UsageError, match="no such strings"):
        LatentCache(data(4), IdentityAutoencoder(), progress=False,  # items with "caption", none with "prompt"
                    text_encoder=FrozenTextConditioner(FrozenTextConditionerConfig(dim=D, caption_key="prompt")))


def test_train_ldm_with_the_text_cache_resumes_exactly(tmp_path):
    ds = data(16)
    kw = {"batch_size": 4, "lr": 1e-3, "warmup": 1, "ema": 0.9, "device": "cpu", "progress": False,
          "checkpoint_every": 2, "latent_cache": True, "text_cache": True, "log_every": 1}
    whole = frozen_ldm()
    train_ldm(whole, ds, steps=4, out_dir=tmp_path / "whole", **kw)
    train_ldm(frozen_ldm(), ds, steps=2, out_dir=tmp_path / "split", **kw)
    resumed = frozen_ldm()
    with torch.no_grad():  # weights no run would end with unless it loads the checkpoint
        for p in resumed.parameters():
            p.add_(0.1)
    train_ldm(resumed, ds, steps=4, out_dir=tmp_path / "split", resume=True, **kw)
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    plain = frozen_ldm()
    train_ldm(plain, ds, steps=4, out_dir=tmp_path / "plain", **{**kw, "text_cache": False})
    for (k, a), b in zip(whole.state_dict().items(), plain.state_dict().values()):
        assert torch.allclose(a, b, rtol=0, atol=1e-5), k  # and the cache trains the weights encoding would


def test_the_frozen_text_recipe_encodes_each_caption_once(tmp_path, monkeypatch):
    calls = []
    original = FrozenTextConditioner.token_states
    monkeypatch.setattr(FrozenTextConditioner, "token_states",
                        lambda self, prompts: calls.append(len(prompts)) or original(self, prompts))
    kw = {"steps": 3, "n_train": 8, "batch_size": 4, "model_channels": 32, "context_dim": 32, "device": "cpu"}
    assert recipes.config("ldm-kl-f4-shapes32-frozen-text").text_cache
    recipes.train("ldm-kl-f4-shapes32-frozen-text", tmp_path / "cached", progress=False, **kw)
    distinct = len({d["caption"] for d in recipes.ldm_data(recipes.config("ldm-kl-f4-shapes32-frozen-text", **kw))})
    assert calls == [distinct, 1]  # the captions once (one chunk), then "" for ∅ once
    calls.clear()
    recipes.train("ldm-kl-f4-shapes32-frozen-text", tmp_path / "plain", progress=False, text_cache=False, **kw)
    assert sorted(calls) == [1, 4, 4, 4]  # without the cache: every step's batch


def test_a_run_trained_before_the_text_cache_field_is_still_found(tmp_path):
    """`load_or_train` reuses a run whose train_config.json predates `text_cache` (a field missing = its default)."""
    from dataclasses import asdict

    from ldm_lite.checkpoint import write_json

    cfg = recipes.config("ldm-kl-f4-shapes32-frozen-text", steps=5)
    old = {k: v for k, v in asdict(cfg).items() if k != "text_cache"}
    write_json(tmp_path / "train_config.json", old)
    assert recipes._same_config(tmp_path, cfg)
    assert not recipes._same_config(tmp_path, recipes.config("ldm-kl-f4-shapes32-frozen-text", steps=6))
    assert not recipes._same_config(tmp_path, recipes.config("ldm-kl-f4-shapes32-frozen-text", steps=5,
                                                             text_cache=False))
