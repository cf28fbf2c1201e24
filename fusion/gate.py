"""The trained fusion gate (AutoLoRA-style fine-grained gated fusion).

AutoLoRA ("AutoLoRA: Automatic LoRA Retrieval and Fine-Grained Gated Fusion for
Text-to-Image Generation") weighs each adapter's output per layer, per output channel and
per timestep. For a layer with base output ``o = W x`` and adapter outputs ``o_i``:

    g_i = sigmoid(w_l * LN(o_i) + w_c * LN(o) * LN(o_i) + w_t(t) + b)      (per channel)
    y   = o + sum_i w_out * g_i * o_i

LN normalises over channels (no affine); ``w_l``, ``w_c``, ``b``, ``w_out`` are per-channel
vectors and ``w_t`` a linear map of sinusoidal timestep features, one set per layer, shared
by all adapters (so one gate serves any adapters). Initialised so that ``y = o + sum_i o_i``
(the weighted merge): w_l = w_c = w_t = b = 0, w_out = 2. AutoLoRA gates the attention
projections; Medley's gate may also cover convolutions (``proj_in``/``proj_out`` of SD1.5,
resnet ``conv1``/``conv2``, where style LoRAs paint texture), gated per output channel
(dim 1 of ``[B, C, H, W]``). Stored as ``assets/fusion-gate/gate.safetensors`` +
``config.json`` (which may carry a ``training`` record); ``training/fusion_gate.py`` trains it.

``strengths`` ({role: gain}, saved in ``config.json``): how strongly the gated method applies
content and style adapters under this gate (a static gain on every UNet layer of the adapter;
1 when absent). The gate decides per channel and step *which* adapter speaks, from
layer-normalised outputs, so a gain leaves its decisions alone and scales only how much the
chosen adapters say. ``training/gate_strength.py`` tunes them with the judge on the gate's
training pairs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import nn

from library.files import write_atomic

GATE_DIR = Path(__file__).resolve().parent.parent / "assets" / "fusion-gate"
GATE_FORMAT = "medley-fusion-gate"
DEFAULT_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
# the attention projections plus the convolutions LoRAs adapt (the starter styles adapt up-block resnets)
CONV_TARGETS: tuple[str, ...] = ("proj_in", "proj_out", "conv1", "conv2")
ALL_TARGETS: tuple[str, ...] = DEFAULT_TARGETS + CONV_TARGETS


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
    var, mean = torch.var_mean(x, dim=dim, keepdim=True, correction=0)
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
        # w_l * n_i + w_c * n_base * n_i + bias = (w_l + w_c * n_base) * n_i + bias: the per-adapter
        # terms cost one fused multiply-add, and w_out multiplies once after the sum
        mix = torch.addcmul(channels(self.w_l), channels(self.w_c), base_norm)
        gate = torch.sigmoid(torch.addcmul(bias, mix, norm))
        total = torch.addcmul(base, channels(self.w_out), (gate * stacked).sum(dim=0))
        return total.to(base_out.dtype)


def _key(target: str) -> str:
    return target.replace(".", "__")


def _features(module: nn.Module) -> int | None:
    """Output channels of a Linear or (ungrouped) Conv2d; None for anything else."""
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.Conv2d) and module.groups == 1:
        return module.out_channels
    return None


class FusionGate(nn.Module):
    """One :class:`LayerGate` per targeted layer, keyed by target name (``unet.<module path>``).

    ``record``: free-form provenance (how it was trained), saved in ``config.json``.
    """

    def __init__(self, layers: Mapping[str, int], time_features: int = 16) -> None:
        super().__init__()
        if time_features < 2 or time_features % 2:
            raise ValueError("time_features must be an even number >= 2")
        self.time_features = int(time_features)
        self.features = dict(sorted(layers.items()))
        self.gates = nn.ModuleDict({_key(t): LayerGate(n, self.time_features) for t, n in self.features.items()})
        self.record: dict[str, Any] = {}
        self.strengths: dict[str, float] = {}

    @classmethod
    def for_unet(
        cls,
        unet: nn.Module,
        targets: Iterable[str] = DEFAULT_TARGETS,
        time_features: int = 16,
        only: Collection[str] | None = None,
    ) -> FusionGate:
        """A fresh (merge-equivalent) gate for every Linear or Conv2d of ``unet`` whose name ends
        with a target; ``only``: keep just these targets (``unet.<path>``, e.g. the layers some
        adapters adapt)."""
        suffixes = tuple("." + t for t in targets)
        layers: dict[str, int] = {}
        for name, module in unet.named_modules():
            features = _features(module)
            target = f"unet.{name}"
            if features is not None and name.endswith(suffixes) and (only is None or target in only):
                layers[target] = features
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
        config: dict[str, Any] = {
            "format": GATE_FORMAT,
            "version": 1,
            "time_features": self.time_features,
            "layers": self.features,
        }
        if self.strengths:
            config["strengths"] = dict(sorted(self.strengths.items()))
        if self.record:
            config["training"] = self.record
        return config

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every parameter as ``<target>.<name>``, float32 on the CPU (the saved form)."""
        tensors = {}
        for target in self.features:
            for name, tensor in self.layer(target).state_dict().items():
                tensors[f"{target}.{name}"] = tensor.detach().float().cpu().contiguous()
        return tensors

    def save(self, directory: str | Path = GATE_DIR) -> Path:
        """Write ``gate.safetensors`` then ``config.json``, each to a temporary file renamed into
        place, so each file is whole (the previous one or the new one), never torn."""
        directory = Path(directory)
        write_atomic(directory / "gate.safetensors", save(self.tensors(), metadata={"format": GATE_FORMAT}))
        write_atomic(directory / "config.json", (json.dumps(self.config(), indent=2) + "\n").encode())
        return directory

    @classmethod
    def load(cls, directory: str | Path = GATE_DIR) -> FusionGate:
        directory = Path(directory)
        weights, config_path = directory / "gate.safetensors", directory / "config.json"
        if not weights.is_file() or not config_path.is_file():
            raise FileNotFoundError(
                f"no trained fusion gate in {directory} (needs gate.safetensors and config.json). Train one with "
                "`python -m training.fusion_gate`, or use method='gated' without gate= for the training-free "
                "schedule"
            )
        config = json.loads(config_path.read_text())
        if config.get("format") != GATE_FORMAT:
            raise ValueError(f"{config_path} is not a Medley fusion gate (format {config.get('format')!r})")
        gate = cls({str(k): int(v) for k, v in config["layers"].items()}, int(config["time_features"]))
        gate.record = dict(config.get("training") or {})
        gate.strengths = {str(role): float(value) for role, value in (config.get("strengths") or {}).items()}
        bad = {role: value for role, value in gate.strengths.items() if not (math.isfinite(value) and value >= 0)}
        if bad:
            raise ValueError(f"{config_path}: strengths must be finite and >= 0, got {bad}")
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
