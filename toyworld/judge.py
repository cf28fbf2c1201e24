"""The judge: a small CNN that reads a toy-world image back into its labels.

It is the referee of every quality benchmark. Weights ship in
``assets/judge/`` and are reproduced by ``python -m training.judge``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from toyworld.vocab import LABEL_SPACES

DEFAULT_JUDGE_DIR = Path(__file__).resolve().parent.parent / "assets" / "judge"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Judge(nn.Module):
    """Shared convolutional trunk with one linear head per attribute."""

    def __init__(self, width: int = 48) -> None:
        super().__init__()
        self.width = width
        self.trunk = nn.Sequential(
            _block(3, width),
            nn.MaxPool2d(2),
            _block(width, width * 2),
            nn.MaxPool2d(2),
            _block(width * 2, width * 4),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(width * 4 * 16, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
        )
        self.heads = nn.ModuleDict({name: nn.Linear(256, len(classes)) for name, classes in LABEL_SPACES.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: float [N, 3, 32, 32] in [0, 1] -> logits per attribute."""
        features = self.trunk(images * 2.0 - 1.0)
        return {name: head(features) for name, head in self.heads.items()}

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / "judge.safetensors"))
        config = {"width": self.width, "label_spaces": {k: list(v) for k, v in LABEL_SPACES.items()}}
        (directory / "config.json").write_text(json.dumps(config, indent=2))

    @classmethod
    def load(cls, directory: Path | str = DEFAULT_JUDGE_DIR) -> Judge:
        directory = Path(directory)
        if not (directory / "judge.safetensors").exists():
            raise FileNotFoundError(
                f"no judge weights in {directory}; run `python -m training.judge` to train them"
            )
        config = json.loads((directory / "config.json").read_text())
        for name, classes in config["label_spaces"].items():
            if tuple(classes) != LABEL_SPACES[name]:
                raise ValueError(f"judge in {directory} was trained on another label space for {name!r}")
        model = cls(width=int(config["width"]))
        model.load_state_dict(load_file(str(directory / "judge.safetensors")))
        return model.eval()


def to_tensor(images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """uint8 [N, H, W, 3] (or a list of PIL/arrays) -> float [N, 3, H, W] in [0, 1]."""
    array = np.stack([np.asarray(image) for image in images]) if isinstance(images, list) else images
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float() / 255.0


@torch.no_grad()
def read_labels(judge: Judge, images: np.ndarray | list[np.ndarray], batch_size: int = 512) -> list[dict[str, str]]:
    """Read each image back into {attribute: class name}."""
    tensor = to_tensor(images)
    out: list[dict[str, str]] = [{} for _ in range(len(tensor))]
    for start in range(0, len(tensor), batch_size):
        logits = judge(tensor[start : start + batch_size])
        for name, values in logits.items():
            for offset, index in enumerate(values.argmax(dim=1).tolist()):
                out[start + offset][name] = LABEL_SPACES[name][index]
    return out


def accuracy(predicted: list[dict[str, str]], expected: list[dict[str, str]]) -> dict[str, float]:
    """Fraction of images whose predicted attribute equals the expected one, per attribute."""
    names = expected[0].keys() if expected else []
    return {
        name: float(np.mean([p[name] == e[name] for p, e in zip(predicted, expected, strict=True)])) for name in names
    }
