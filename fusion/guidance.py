"""Adapter guidance: how strongly each adapter acts in the unconditional half of classifier-free guidance.

A diffusers pipeline with guidance runs the UNet on ``[uncond; cond]`` and forms

    eps = eps_uncond + g * (eps_cond - eps_uncond).

Loaders (A1111, ComfyUI, diffusers' ``set_adapters``) apply every adapter to both halves, so
the guidance term sees only what the prompt changes. When an adapter acts in the conditional
half alone, its own effect is part of ``eps_cond - eps_uncond`` and guidance amplifies it by
``g``, as it does the prompt: the adapter is *guided* rather than merely added. An
unconditional gain ``u`` between 1 (the loaders' behaviour) and 0 (fully guided) sets how much
of that amplification an adapter gets, per role (content, style, other).

:func:`split_guidance_forward` wraps a UNet forward so that it runs the two halves as two
passes, letting the method change the adapters' gates between them. It only acts on a guided
step's batch (:func:`guiding`); otherwise (a bare UNet, training, guidance 1) the forward runs
unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from fusion.session import FusionSession

BRANCHES: tuple[str, ...] = ("uncond", "cond")


def validate_gains(gains: Mapping[str, float], roles: tuple[str, ...], what: str) -> dict[str, float]:
    """{role: gain} with known roles and finite gains >= 0, or a ValueError naming the culprit."""
    out: dict[str, float] = {}
    for role, value in gains.items():
        if role not in roles:
            raise ValueError(f"{what}: roles are {', '.join(roles)}; got {role!r}")
        gain = float(value)
        if not gain >= 0 or gain == float("inf"):
            raise ValueError(f"{what}: {role} must be a finite number >= 0, got {value!r}")
        out[str(role)] = gain
    return out


def _half(value: Any, index: int, size: int) -> Any:
    """Half ``index`` (0: uncond, 1: cond) of a batched argument; unbatched values pass through."""
    if isinstance(value, torch.Tensor):
        if value.dim() > 0 and value.shape[0] == 2 * size:
            return value[index * size : (index + 1) * size]
        return value
    if isinstance(value, Mapping):
        return {key: _half(item, index, size) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_half(item, index, size) for item in value)
    return value


def _sample(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple):
        return output[0]
    return output.sample


def _join(first: Any, second: Any) -> Any:
    """The two halves' UNet outputs as one, in the form the UNet returned them."""
    sample = torch.cat([_sample(first), _sample(second)])
    if isinstance(second, torch.Tensor):
        return sample
    if isinstance(second, tuple):
        return (sample, *second[1:])
    return type(second)(sample=sample)


def guiding(pipe: Any, sample: torch.Tensor) -> bool:
    """Whether this UNet call is a classifier-free-guidance batch ``[uncond; cond]``.

    The pipeline says it guides (``do_classifier_free_guidance``, which keeps its value after
    a call returns) and the two halves hold the same latents, as a guided step's do; a direct
    UNet call (training, a test) has no such halves.
    """
    try:
        guided = bool(getattr(pipe, "do_classifier_free_guidance", False))
    except (AttributeError, TypeError):  # the pipeline has not been called yet
        return False
    if not guided or sample.dim() == 0 or sample.shape[0] % 2:
        return False
    size = sample.shape[0] // 2
    return bool(torch.equal(sample[:size], sample[size:]))


def split_guidance_forward(
    forward: Callable[..., Any], session: FusionSession, set_branch: Callable[[str | None], None]
) -> Callable[..., Any]:
    """A forward that runs ``[uncond; cond]`` as two passes, calling ``set_branch`` before each."""

    def guided_forward(sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if not guiding(session.pipe, sample):
            return forward(sample, *args, **kwargs)
        size = sample.shape[0] // 2
        outputs = []
        try:
            for index, branch in enumerate(BRANCHES):
                set_branch(branch)
                session.refresh_gates()
                outputs.append(
                    forward(
                        sample[index * size : (index + 1) * size],
                        *(_half(a, index, size) for a in args),
                        **{key: _half(value, index, size) for key, value in kwargs.items()},
                    )
                )
        finally:
            set_branch(None)
            session.refresh_gates()
        return _join(*outputs)

    return guided_forward
