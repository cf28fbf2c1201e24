"""The fusion session of one loaded base, kept from one generation to the next.

A :class:`FusionHost` holds one :class:`~fusion.FusionSession` for its base, for the life of the
base. Each generation asks for its adapters and method; the host swaps them into the session it
already has (:meth:`~fusion.FusionSession.swap`: the fused-layer wrappers made for the base are
reused and reloaded, checked adapters are not checked again), so a repeated generation with the
same adapters costs a reload of a few stacked tensors, not a new composition. Between the runs of
one render the composition stays attached (the next run swaps); when a render is done,
:meth:`FusionHost.release` puts the base's original modules and weights back, so code that uses
the pipeline directly afterwards (training, a bare UNet call) sees the base as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fusion import AdapterSpec, FusionSession
from fusion.methods import make_method


class FusionHost:
    """The persistent fusion session of one pipeline (see the module docstring)."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.session: FusionSession | None = None
        self.swaps = 0  # compositions served by swapping into the kept session

    def apply(self, adapters: Sequence[AdapterSpec], fusion: str, options: dict[str, Any] | None,
              steps: int) -> FusionSession:
        """Attach ``adapters`` composed by ``fusion`` (a fresh method instance, so its state starts anew);
        nothing changes if the set is refused."""
        method = make_method(fusion, **(options or {}))
        if self.session is None:
            self.session = FusionSession(self.pipe, list(adapters), method, steps).attach()
        else:
            self.session.swap(list(adapters), method=method, num_inference_steps=steps)
            self.swaps += 1
        return self.session

    def release(self) -> None:
        """Detach whatever is attached: the base is back to its original modules and weights."""
        if self.session is not None and self.session.attached:
            self.session.detach()

    @property
    def attached(self) -> FusionSession | None:
        return self.session if self.session is not None and self.session.attached else None
