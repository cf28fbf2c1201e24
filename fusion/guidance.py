"""Adapter guidance: how strongly each adapter acts in the unconditional half of classifier-free guidance.

A diffusers pipeline with guidance runs the UNet on ``[uncond; cond]`` and forms

    eps = eps_uncond + g * (eps_cond - eps_uncond).

Loaders (A1111, ComfyUI, diffusers' ``set_adapters``) apply every adapter to both halves, so
the guidance term sees only what the prompt changes. When an adapter acts in the conditional
half alone, its own effect is part of ``eps_cond - eps_uncond`` and guidance amplifies it by
``g``, as it does the prompt: the adapter is *guided* rather than merely added. An
unconditional gain ``u`` between 1 (the loaders' behaviour) and 0 (fully guided) sets how much
of that amplification an adapter gets, per role (content, style, other).

It costs no extra UNet pass: the fused layers (:mod:`fusion.layer`) scale the low-rank
activations ``down x`` of the unconditional rows by each adapter's gain before the up
projection, in the same call. It acts only in a guided run: the pipeline run that the session drives
(:meth:`fusion.session.FusionSession.run`, which :func:`pipeline.generate` uses) says how many rows
the unconditional half holds; a bare UNet call, training or guidance 1 is unchanged.
The text encoder's adapters (if any) are not touched: the gains act on the UNet.
"""

from __future__ import annotations

from collections.abc import Mapping


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
