"""The trained fusion gate (AutoLoRA-style fine-grained gated fusion).

AutoLoRA ("AutoLoRA: Automatic LoRA Retrieval and Fine-Grained Gated Fusion for
Text-to-Image Generation") weighs each adapter's output per layer, per output channel and
per timestep. For a layer with base output ``o = W x`` and adapter outputs ``o_i``:

    g_i = sigmoid(w_l * LN(o_i) + w_c * LN(o) * LN(o_i) + w_t(t) + b)      (per channel)
    y   = o + sum_i w_out * g_i * o_i

LN normalises over channels (no affine); ``w_l``, ``w_c``, ``b``, ``w_out`` are per-channel
vectors and ``w_t`` a linear map of sinusoidal timestep features, one set per layer, shared
by all adapters (so one gate serves any adapters). Initialised so that ``y = o + sum_i o_i``
(the weighted merge): w_l = w_c = w_t = b = 0, w_out = 2. Stored as
``assets/fusion-gate/gate.safetensors`` + ``config.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

GATE_DIR = Path(__file__).resolve().parent.parent / "assets" / "fusion-gate"
GATE_FORMAT = "medley-fusion-gate"
DEFAULT_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")


def timestep_features(timestep: Any, count: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Sinusoidal features [B, count] of timesteps (0..1000 scale); B = 1 for a scalar."""
    t = torch.as_tensor(0.0 if timestep is None else timestep, dtype=torch.float32, device=device).flatten()
    half = count // 2
    frequencies = torch.exp(-math.log(1000.0) * torch.arange(half, device=device, dtype=torch.float32) / max(half, 1))
    angles = t[:, None] * frequencies[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _normalise(x: torch.Tensor, dim: int, eps: float = 1e-5) -> torch.Tensor:
    """Layer norm over ``dim`` without affine (the fused kernel when ``dim`` is the last)."""
    if dim in (-1, x.dim() - 1):
        return F.layer_norm(x, (x.shape[-1],), eps=eps)
    mean = x.mean(dim=dim, keepdim=True)
    var = x.var(dim=dim, keepdim=True, unbiased=False)
    return (x - mean) * torch.rsqrt(var + eps)


class LayerGate(nn.Module):
    """The gate of one layer with ``features`` output channels."""

    def __init__(self, features: int, time_features: int) -> None:
        super().__init__()
        self.w_l = nn.Parameter(torch.zeros(features))
        self.w_c = nn.Parameter(torch.zeros(features))
        self.b = nn.Parameter(torch.zeros(features))
        self.w_out = nn.Parameter(torch.full((features,), 2.0))
        self.w_t = nn.Linear(time_features, features)
        nn.init.zeros_(self.w_t.weight)
        nn.init.zeros_(self.w_t.bias)

    def forward(
        self, base_out: torch.Tensor, outputs: list[torch.Tensor], time: torch.Tensor, channel_dim: int
    ) -> torch.Tensor:
        dim = channel_dim % base_out.dim()
        shape = [1] * base_out.dim()
        shape[dim] = -1

        def channels(v: torch.Tensor) -> torch.Tensor:
            return v.view(shape)

        time_bias = self.w_t(time)  # [Bt, C]
        batch = base_out.shape[0]
        if time_bias.shape[0] not in (1, batch) and batch % time_bias.shape[0] == 0:
            time_bias = time_bias.repeat(batch // time_bias.shape[0], 1)
        time_shape = [1] * base_out.dim()
        time_shape[0], time_shape[dim] = time_bias.shape[0], time_bias.shape[1]
        if time_bias.shape[0] == 1 or base_out.dim() < 2:
            bias = channels(time_bias.flatten() + self.b)
        else:
            bias = time_bias.view(time_shape) + channels(self.b)
        base = base_out.float()
        base_norm = _normalise(base, dim)
        stacked = torch.stack(outputs).float()  # [k, ...]: every adapter in one pass
        norm = _normalise(stacked, dim + 1)
        gate = torch.sigmoid(channels(self.w_l) * norm + channels(self.w_c) * base_norm * norm + bias)
        total = base + (channels(self.w_out) * gate * stacked).sum(dim=0)
        return total.to(base_out.dtype)


def _key(target: str) -> str:
    return target.replace(".", "__")


class FusionGate(nn.Module):
    """One :class:`LayerGate` per targeted layer, keyed by target name (``unet.<module path>``)."""

    def __init__(self, layers: Mapping[str, int], time_features: int = 16) -> None:
        super().__init__()
        if time_features < 2 or time_features % 2:
            raise ValueError("time_features must be an even number >= 2")
        self.time_features = int(time_features)
        self.features = dict(sorted(layers.items()))
        self.gates = nn.ModuleDict({_key(t): LayerGate(n, self.time_features) for t, n in self.features.items()})

    @classmethod
    def for_unet(
        cls, unet: nn.Module, targets: Iterable[str] = DEFAULT_TARGETS, time_features: int = 16
    ) -> FusionGate:
        """A fresh (merge-equivalent) gate for every Linear of ``unet`` whose name ends with a target."""
        suffixes = tuple("." + t for t in targets)
        layers = {
            f"unet.{name}": module.out_features
            for name, module in unet.named_modules()
            if isinstance(module, nn.Linear) and name.endswith(suffixes)
        }
        return cls(layers, time_features)

    def __contains__(self, target: object) -> bool:
        return target in self.features

    def layer(self, target: str) -> LayerGate:
        gate = self.gates[_key(target)]
        assert isinstance(gate, LayerGate)
        return gate

    def time(self, timestep: Any, device: torch.device | str) -> torch.Tensor:
        return timestep_features(timestep, self.time_features, device)

    def config(self) -> dict[str, Any]:
        return {"format": GATE_FORMAT, "version": 1, "time_features": self.time_features, "layers": self.features}

    def save(self, directory: str | Path = GATE_DIR) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for target in self.features:
            for name, tensor in self.layer(target).state_dict().items():
                tensors[f"{target}.{name}"] = tensor.detach().float().cpu().contiguous()
        save_file(tensors, str(directory / "gate.safetensors"), metadata={"format": GATE_FORMAT})
        (directory / "config.json").write_text(json.dumps(self.config(), indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path = GATE_DIR) -> FusionGate:
        directory = Path(directory)
        weights, config_path = directory / "gate.safetensors", directory / "config.json"
        if not weights.is_file() or not config_path.is_file():
            raise FileNotFoundError(
                f"no trained fusion gate in {directory} (needs gate.safetensors and config.json). Train one with "
                "the gate-training script (it calls fusion.gate_training.gate_loss), or use method='gated' "
                "without gate= for the training-free schedule"
            )
        config = json.loads(config_path.read_text())
        if config.get("format") != GATE_FORMAT:
            raise ValueError(f"{config_path} is not a Medley fusion gate (format {config.get('format')!r})")
        gate = cls({str(k): int(v) for k, v in config["layers"].items()}, int(config["time_features"]))
        tensors = load_file(str(weights))
        for target in gate.features:
            layer = gate.layer(target)
            state = {name: tensors[f"{target}.{name}"] for name in layer.state_dict()}
            layer.load_state_dict(state)
        return gate


def resolve_gate(gate: FusionGate | str | Path | bool | None) -> FusionGate | None:
    """``None``/``False``: no trained gate; ``True``/``"trained"``: the shipped one; a path; or a gate."""
    if gate is None or gate is False:
        return None
    if isinstance(gate, FusionGate):
        return gate
    if gate is True or gate == "trained":
        return FusionGate.load(GATE_DIR)
    return FusionGate.load(Path(gate))
