"""A composition attached to a pipeline: :func:`compose` and :class:`FusionSession`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fusion import blocks, injection
from fusion.checks import ensure_applicable
from fusion.context import StepContext
from fusion.layer import DenseTerm, FusedLayer, Slot, weight_of
from fusion.methods import FusionMethod, make_method
from fusion.spec import AdapterSpec
from library.compat import IncompatibleAdapterError
from library.lora import COMPONENTS, AdapterModule, LoraAdapter, split_target

_NO_FORWARD = object()


@dataclass(frozen=True)
class Term:
    """One adapter's update at one layer, as the session stacks it: low-rank factors ``down``/``up`` with
    ``scale`` (own scale x weight x block x method gain), or (``down`` None) the module's dense delta times
    ``scale`` (weight x block x method gain; the delta holds the module's own scale)."""

    adapter: int
    module: AdapterModule
    down: torch.Tensor | None
    up: torch.Tensor | None
    scale: float
    own_scale: float = 1.0

    @property
    def rank(self) -> int:
        assert self.down is not None
        return int(self.down.shape[0])

    @property
    def is_norm(self) -> bool:
        return bool(getattr(self.module, "is_norm", False))

    def dense(self, layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight update, bias update or None) at the term's scale, float32, from ``layer``'s original weight:
        a DoRA or (IA)^3 update is a function of it (``delta_on``), a full diff may carry a bias (``diff_b``)."""
        base = getattr(layer, "base_layer", layer)
        if getattr(self.module, "needs_base_weight", False):
            weight = weight_of(layer).detach().float()
            delta = self.module.delta_on(weight, torch.float32)  # type: ignore[attr-defined]
            bias = self.module.bias_delta_on(getattr(base, "bias", None))  # type: ignore[attr-defined]
        else:
            delta = self.module.delta(torch.float32)
            bias_of = getattr(self.module, "bias_delta", None)
            bias = bias_of(torch.float32) if bias_of is not None else None
        scale = self.scale / self.own_scale
        return delta * scale, (None if bias is None else bias.float() * scale)

    def delta(self, layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The update this term adds (for a static merge): weight and bias."""
        if self.down is not None:  # a low-rank term's ``scale`` already holds its own scale, which delta() applies
            return self.module.delta(torch.float32) * (self.scale / self.own_scale), None
        return self.dense(layer)


Plan = dict[str, list[Term]]


def components_of(pipe: Any) -> dict[str, nn.Module]:
    """{"unet": ..., "text_encoder": ..., ...} of a diffusers pipeline (or a bare UNet)."""
    if isinstance(pipe, nn.Module):
        return {"unet": pipe}
    found = {name: getattr(pipe, name, None) for name in COMPONENTS}
    return {name: model for name, model in found.items() if isinstance(model, nn.Module)}


def as_specs(adapters: Sequence[AdapterSpec | LoraAdapter]) -> list[AdapterSpec]:
    specs = [a if isinstance(a, AdapterSpec) else AdapterSpec(f"adapter{i}", a) for i, a in enumerate(adapters)]
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"adapter names must be unique, got {names}")
    return specs


class FusionSession:
    """Adapters composed into a pipeline by one method; a context manager that detaches on exit.

    ``description`` (and :meth:`describe`) records method, options and adapters for provenance.
    """

    def __init__(
        self,
        pipe: Any,
        adapters: Sequence[AdapterSpec | LoraAdapter],
        method: FusionMethod,
        num_inference_steps: int | None = None,
    ) -> None:
        self.pipe = pipe
        self.components = components_of(pipe)
        self.scheduler = getattr(pipe, "scheduler", None)
        self.method = method
        self.specs = as_specs(adapters)
        self.entries: list[AdapterSpec] = []
        config = getattr(self.scheduler, "config", None)
        train_steps = int(getattr(config, "num_train_timesteps", 1000) or 1000)
        self.context = StepContext(num_inference_steps=num_inference_steps, num_train_timesteps=train_steps)
        self.gate_version = 0
        self.attached = False
        self.uncond_gains: list[float] | None = None  # per entry, from the method (adapter guidance)
        self.guided_rows = 0  # rows of the unconditional half of the current UNet call (0: not guided)
        self.row_coeffs: dict[str, torch.Tensor] | None = None  # heterogeneous batch: per-row coefficients
        self.row_version = 0
        self._step: list[float] | None = None
        self._layers: dict[str, injection.Site] = {}
        self._saved: list[tuple[nn.Module, torch.Tensor]] = []
        self._saved_params: list[tuple[torch.Tensor, torch.Tensor]] = []  # (parameter, its original values)
        self.norm_targets: set[str] = set()
        self._hooks: list[Any] = []
        self._forward_before: Any = _NO_FORWARD

    # ---------------------------------------------------------------- planning (touches nothing)
    def _plan(self, specs: list[AdapterSpec]) -> tuple[list[AdapterSpec], Plan]:
        unet = self.components.get("unet")
        for spec in specs:
            ensure_applicable(spec.adapter, self.components, spec.name)
            blocks.validate(spec.block_weights, unet)
        if self.method.static and any(spec.schedule is not None for spec in specs):
            raise ValueError("a static merge cannot follow a per-step schedule; use the dynamic merge")
        entries = self.method.prepare(list(specs), self.components)
        plan: Plan = {}
        checked = {id(spec) for spec in specs}
        for index, spec in enumerate(entries):
            if id(spec) not in checked:  # built by the method (e.g. Break-for-Make)
                ensure_applicable(spec.adapter, self.components, spec.name)
            for target, module in sorted(spec.adapter.modules.items()):
                component, path = split_target(target)
                gains = (spec.component_weight(component), blocks.multiplier(spec.block_weights, component, path),
                         self.method.static_gain(index, spec, component, path))
                term = _term(spec.name, target, index, module, gains,
                             lambda c=component, p=path: weight_of(self.components[c].get_submodule(p)))
                if term is not None:
                    plan.setdefault(target, []).append(term)
        return entries, plan

    # ---------------------------------------------------------------- attaching
    def attach(self) -> FusionSession:
        if self.attached:
            return self
        entries, plan = self._plan(self.specs)
        self._apply(entries, plan)
        return self

    def _apply(self, entries: list[AdapterSpec], plan: Plan) -> None:
        for model in self.components.values():
            injection.claim(model, self)
        self.attached = True
        self.entries = entries
        self.uncond_gains = self.method.uncond_gains()
        self.guided_rows = 0
        self.context.reset()
        try:
            norms = {target: items for target, items in plan.items() if any(term.is_norm for term in items)}
            plan = {target: items for target, items in plan.items() if target not in norms}
            self._edit_norms(norms)
            self.norm_targets = set(norms)
            if self.method.static:
                self._merge(plan)
            else:
                self._wrap(plan)
            unet = self.components.get("unet")
            if unet is not None:
                self._hooks.append(unet.register_forward_pre_hook(self._observe, with_kwargs=True))
                wrapped = self.method.wrap_forward(unet.forward, self)
                if wrapped is not None:
                    self._forward_before = unet.__dict__.get("forward", None)
                    unet.forward = wrapped  # type: ignore[method-assign]
            self._step = self._step_vector()
            self.gate_version += 1
        except BaseException:
            self.detach()
            raise

    def _merge(self, plan: Plan) -> None:
        for target, items in plan.items():
            component, path = split_target(target)
            module = self.components[component].get_submodule(path)
            parts = [term.delta(module) for term in items]  # every part from the original weight, then one add
            delta = sum(weight for weight, _ in parts)
            assert isinstance(delta, torch.Tensor)
            biases = [bias for _, bias in parts if bias is not None]
            self._saved.append((module, injection.merge_weight(module, delta)))
            if biases:
                self._edit_bias(module, sum(biases))  # type: ignore[arg-type]

    def _edit_bias(self, module: nn.Module, delta: torch.Tensor) -> None:
        bias = getattr(getattr(module, "base_layer", module), "bias", None)
        if not isinstance(bias, torch.Tensor):
            raise IncompatibleAdapterError("an adapter updates the bias of a layer that has none")
        self._saved_params.append((bias, bias.detach().clone()))
        with torch.no_grad():
            bias.add_(delta.to(device=bias.device, dtype=bias.dtype))

    def _edit_norms(self, norms: dict[str, list[Term]]) -> None:
        """Norm updates go into the norm layers' own weight and bias for the session (restored exactly on
        detach); they act at the adapter's static weight, not under per-step gates."""
        for target, items in norms.items():
            component, path = split_target(target)
            layer = self.components[component].get_submodule(path)
            weight = weight_of(layer)
            self._saved_params.append((weight, weight.detach().clone()))
            with torch.no_grad():
                for term in items:
                    weight.add_((term.module.delta(torch.float32) * term.scale).to(weight.device, weight.dtype))
            biases = [(term.module.bias_delta(torch.float32), term.scale) for term in items]  # type: ignore[attr-defined]
            if any(bias is not None for bias, _ in biases):
                self._edit_bias(layer, sum(bias * scale for bias, scale in biases if bias is not None))  # type: ignore[arg-type]

    def _wrap(self, plan: Plan) -> None:
        for target, items in plan.items():
            component, path = split_target(target)
            model = self.components[component]
            site = injection.site_for(model, path)
            weight = site.wrapper.weight
            device, dtype = weight.device, weight.dtype
            low = [term for term in items if term.down is not None]
            dense = tuple(_dense_term(term, model.get_submodule(path), device, dtype)
                          for term in items if term.down is None)
            slots, start = [], 0
            for term in low:
                slots.append(Slot(term.adapter, start, start + term.rank))
                start += term.rank
            down = up = None
            if len(low) == 1:
                term = low[0]
                assert term.down is not None and term.up is not None
                down = term.down.to(device=device, dtype=dtype)
                up = (term.up.to(device=device, dtype=torch.float32) * term.scale).to(dtype)
            elif low:
                down = torch.cat([term.down for term in low]).to(device=device, dtype=dtype)  # type: ignore[misc]
                up = torch.cat([term.up for term in low], dim=1).to(device=device, dtype=torch.float32)  # type: ignore[misc]
                scales = [term.scale for term in low for _ in range(term.rank)]
                gain = torch.tensor(scales, dtype=torch.float32, device=device)
                up = (up * (gain.view(1, -1, 1, 1) if up.dim() == 4 else gain)).to(dtype)
            on_unet = component == "unet"
            site.wrapper.load(
                target,
                tuple(slots),
                down,
                up,
                owner=self,
                static=not on_unet,
                split=on_unet and self.method.splits(component, path),
                dense=dense,
            )
            self._layers[target] = site
            injection.install(site)

    def detach(self, keep: frozenset[str] = frozenset()) -> None:
        """Restore the base exactly: original modules back, original weight values back.

        (``keep``: targets whose wrappers stay in place, emptied, for an immediate reload.)
        """
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        unet = self.components.get("unet")
        if self._forward_before is not _NO_FORWARD and unet is not None:
            if self._forward_before is None:
                unet.__dict__.pop("forward", None)
            else:
                unet.forward = self._forward_before  # type: ignore[method-assign]
            self._forward_before = _NO_FORWARD
        for target in list(self._layers):
            site = self._layers[target]
            if target in keep:
                site.wrapper.clear()
            else:
                injection.uninstall(site)
                del self._layers[target]
        for module, saved in reversed(self._saved):
            injection.restore_weight(module, saved)
        self._saved.clear()
        with torch.no_grad():
            for parameter, original in reversed(self._saved_params):
                parameter.copy_(original)
        self._saved_params.clear()
        self.norm_targets = set()
        for model in self.components.values():
            injection.release(model, self)
        self.attached = False
        self.uncond_gains, self.guided_rows = None, 0
        self.row_coeffs = None

    def swap(
        self,
        adapters: Sequence[AdapterSpec | LoraAdapter],
        method: FusionMethod | None = None,
        num_inference_steps: int | None = None,
    ) -> FusionSession:
        """Compose another set of adapters (and, if given, another method), reusing the wrappers.

        The new set is checked first; if it is refused, the current one stays attached (a static merge is
        taken out first, so that the new set is planned against the original weights).
        """
        specs = as_specs(adapters)
        previous = self.method
        if previous.static and self.attached:  # the weights hold the merge: plan against the original base
            self.detach()
        if method is not None:
            self.method = method
        try:
            entries, plan = self._plan(specs)
        except BaseException:
            self.method = previous
            raise
        self.detach(keep=frozenset(plan) if not (self.method.static or previous.static) else frozenset())
        if num_inference_steps is not None:
            self.context.num_inference_steps = num_inference_steps
        self.specs = specs
        self._apply(entries, plan)
        return self

    def __enter__(self) -> FusionSession:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    # ---------------------------------------------------------------- per step
    def _observe(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """A UNet call outside a driven run (training, a bare UNet): take the step from its timestep."""
        if self.context.driven:
            return
        timestep = kwargs["timestep"] if "timestep" in kwargs else (args[1] if len(args) > 1 else None)
        if self.context.observe(timestep, self.scheduler):
            self._advance()

    def begin_run(self, timesteps: Sequence[float], guided_rows: int = 0) -> None:
        """A sampling run starts over ``timesteps``; ``guided_rows``: the rows of the unconditional half of
        each UNet batch (the pipeline lays out ``[uncond; cond]``), 0 when the run does not guide."""
        self.context.drive(timesteps)
        self.guided_rows = int(guided_rows) if self.uncond_gains is not None else 0
        self._advance()

    def step_done(self, index: int) -> None:
        """Step ``index`` of the run finished (the pipeline's step callback): move to the next."""
        if self.context.at(index + 1):
            self._advance()

    def set_rows(self, unet: torch.Tensor, text: torch.Tensor) -> None:
        """Give each row of the coming calls its own coefficient per attached adapter (``[rows, adapters]``,
        :mod:`fusion.rows`); the stacked factors then carry no weight of their own."""
        if not self.method.batches:
            raise ValueError(f"fusion method {self.method.name!r} cannot give the rows of a batch their own adapters")
        if self.norm_targets:
            raise ValueError("norm-layer updates are written into the norm layers, the same for every row")
        count = len(self.entries)
        for name, matrix in (("unet", unet), ("text", text)):
            if matrix.dim() != 2 or matrix.shape[1] != count or not bool(torch.isfinite(matrix).all()):
                raise ValueError(f"{name} row coefficients must be a finite [rows, {count}] matrix")
        device = next(iter(self.components.values())).device if self.components else torch.device("cpu")
        self.row_coeffs = {"unet": unet.to(device), "text": text.to(device)}
        self.row_version += 1
        self.gate_version += 1

    def clear_rows(self) -> None:
        if self.row_coeffs is not None:
            self.row_coeffs = None
            self.row_version += 1
            self.gate_version += 1

    def end_run(self) -> None:
        self.context.release()
        self.guided_rows = 0

    def run(self, **call: Any) -> Any:
        """``self.pipe(**call)`` with this session driving the steps and the guidance layout.

        The run's timesteps come from the scheduler (set for ``num_inference_steps`` before the call,
        as the pipeline sets them), the step from the pipeline's ``callback_on_step_end`` (chained with
        the caller's), and the unconditional rows from the batch the call lays out when it guides
        (``guidance_scale`` > 1): no UNet input is inspected.
        """
        pipe = self.pipe
        steps = int(call.get("num_inference_steps", 50))
        scheduler = pipe.scheduler
        scheduler.set_timesteps(steps)
        timesteps = [float(t) for t in scheduler.timesteps.tolist()]
        guidance = float(call.get("guidance_scale", 7.5))
        unet_config = getattr(self.components.get("unet"), "config", None)
        guided = guidance > 1.0 and getattr(unet_config, "time_cond_proj_dim", None) is None
        caller: Callable[..., Any] | None = call.pop("callback_on_step_end", None)

        def on_step_end(pipeline: Any, index: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            self.step_done(index)
            return caller(pipeline, index, timestep, kwargs) if caller is not None else kwargs

        self.begin_run(timesteps, _rows_of(call) if guided else 0)
        try:
            return pipe(**call, callback_on_step_end=on_step_end)
        finally:
            self.end_run()

    def _step_vector(self) -> list[float] | None:
        context, count = self.context, len(self.entries)
        vector: list[float] | None = None
        if any(spec.schedule is not None for spec in self.entries):
            vector = [1.0 if s.schedule is None else s.schedule(context.fraction) for s in self.entries]
        gates = self.method.step_gates(context, count)
        if gates is not None:
            vector = [a * b for a, b in zip(vector or [1.0] * count, gates, strict=True)]
        if context.solo is not None:
            vector = [v if i == context.solo else 0.0 for i, v in enumerate(vector or [1.0] * count)]
        return vector

    def _advance(self) -> None:
        vector = self._step_vector()
        if self.method.layer_dependent or vector != self._step:
            self._step = vector
            self.gate_version += 1

    def set_solo(self, index: int | None) -> None:
        """Let only adapter ``index`` act (None: all); used by composite's passes."""
        self.context.solo = index
        self.context.version += 1
        self._advance()

    def gates_for(self, layer: FusedLayer) -> list[float] | None:
        """Per-slot gates of ``layer`` for the current step (None: all 1)."""
        if self.method.layer_dependent:
            return self.method.layer_gates(layer, self.context, self._step)
        return None if self._step is None else [self._step[i] for i in layer.adapters]

    def combine(self, layer: FusedLayer, base_out: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor:
        return self.method.combine(layer, base_out, outputs, self.context)

    # ---------------------------------------------------------------- introspection
    @property
    def layers(self) -> Mapping[str, FusedLayer]:
        """{target: fused layer} of the dynamic path (empty for a static merge)."""
        return {target: site.wrapper for target, site in self._layers.items()}

    def gates(self, target: str) -> dict[str, float]:
        """The current step's gate of each adapter at ``target`` (static scales excluded)."""
        layer = self._layers[target].wrapper
        values = self.gates_for(layer) if not layer.static else None
        return {
            self.entries[a].name: 1.0 if values is None else float(values[i]) for i, a in enumerate(layer.adapters)
        }

    def unet_adapters(self) -> list[int]:
        """Indices (into ``entries``) of the adapters that change the UNet."""
        return [i for i, spec in enumerate(self.entries) if spec.adapter.targets("unet")]

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.method.name,
            "options": self.method.options(),
            "static": self.method.static,
            "num_inference_steps": self.context.num_inference_steps,
            "adapters": [spec.describe() for spec in self.specs],
        }

    @property
    def description(self) -> str:
        parts = [f"{s.name}:{s.weight:g}" + (f" ({s.role})" if s.role != "other" else "") for s in self.specs]
        return f"{self.method.name}[{', '.join(parts)}]"


def _dense_term(term: Term, layer: nn.Module, device: torch.device, dtype: torch.dtype) -> DenseTerm:
    weight, bias = term.dense(layer)
    return DenseTerm(term.adapter, weight.to(device, dtype), None if bias is None else bias.to(device, dtype))


def _scaled(start: float, gains: tuple[float, ...]) -> float:
    for gain in gains:  # in this order, so a LoRA's scale is computed as it always was (bit for bit)
        start *= gain
    return start


def _term(name: str, target: str, index: int, module: AdapterModule, gains: tuple[float, ...],
          weight_of_layer: Callable[[], torch.Tensor]) -> Term | None:
    """How the session carries ``module`` (None: it does not act, its gain is 0). The layer's weight is looked
    up only where a check needs it (a dense term, a conv LoRA): a swap of plain LoRAs walks no module path."""
    factors = module.factors()
    if factors is None:  # a dense term D x (LyCORIS full/diff, a LoHa/LoKr of high exact rank, DoRA, (IA)^3)
        gain = _scaled(1.0, gains)
        if gain == 0.0:
            return None
        weight = weight_of_layer()
        if getattr(module, "needs_base_weight", False):
            try:
                module.check_base(weight)  # type: ignore[attr-defined]
            except ValueError as error:
                raise IncompatibleAdapterError(f"{name}: {target}: {error}") from None
        elif tuple(module.weight_shape) != tuple(weight.shape):
            raise IncompatibleAdapterError(f"{name}: {module.family} delta at {target} is {list(module.weight_shape)}, "
                                           f"the base weight is {list(weight.shape)}")
        return Term(index, module, None, None, gain)
    down, up, own = factors
    scale = _scaled(own, gains)
    if scale == 0.0:
        return None
    if down.dim() == 4 and (up.shape[2:] != (1, 1) or down.shape[2:] != weight_of_layer().shape[2:]):
        raise IncompatibleAdapterError(
            f"{name}: conv LoRA at {target} needs a {tuple(weight_of_layer().shape[2:])} down kernel "
            f"and a 1x1 up kernel, got {tuple(down.shape[2:])} and {tuple(up.shape[2:])}"
        )
    return Term(index, module, down, up, scale, own)


def _rows_of(call: Mapping[str, Any]) -> int:
    """Images a pipeline call renders (the rows of each half of a guided UNet batch)."""
    latents = call.get("latents")
    if isinstance(latents, torch.Tensor):
        return int(latents.shape[0])
    prompt = call.get("prompt")
    count = len(prompt) if isinstance(prompt, list) else 1
    return count * int(call.get("num_images_per_prompt", 1) or 1)


def compose(
    pipe: Any,
    adapters: Sequence[AdapterSpec | LoraAdapter],
    method: str | FusionMethod = "merge",
    *,
    num_inference_steps: int | None = None,
    **options: Any,
) -> FusionSession:
    """Attach ``adapters`` to ``pipe`` (a diffusers pipeline, or a bare UNet) with ``method``.

    Every adapter is checked against the base first (``library.compat.check_applicable``);
    nothing is touched if one is refused. Use as ``with compose(...) as session:`` (detaches
    on exit) or call ``session.detach()``. ``options`` go to the method (see FUSION_METHODS).
    ``num_inference_steps`` is only needed when the scheduler's timesteps do not tell it.
    """
    session = FusionSession(pipe, adapters, make_method(method, **options), num_inference_steps)
    return session.attach()
