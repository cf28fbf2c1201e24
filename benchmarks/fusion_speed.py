"""Fusion speed: ``python benchmarks/fusion_speed.py [--json] [--steps N] [--repeats N]``.

On a UNet with the real SD1.5 configuration (random weights, CPU, 32x32 latent, batch 2) and
on the toy-architecture UNet, with three LoRAs (ranks 8, 16, 32 on to_q/to_k/to_v/to_out.0):

* time per denoising step (one UNet call at a new timestep): the base, Medley's merge
  (dynamic and static; and with the three adapters as LoHas of rank 4 x 4, stacked exactly at rank 16,
  and as LoKrs of full factors, whose exact rank is too high to stack: dense terms), gated
  (schedule; and the trained gate, with a randomly initialised gate of the same shape when none
  is trained for that UNet), switch and K-LoRA, and
  diffusers' PEFT path (load_lora_weights + set_adapters, unfused and fused). Configurations
  are interleaved with base runs in every repeat, and each ratio is the median over repeats
  of the configuration against the base runs just before and after it;
* time to switch to another set of three rank-16 adapters: Medley (in memory, and reading
  the files), diffusers (delete_adapters + load from disk + set_adapters);
* weight drift of the base after 100 Medley swaps (and after diffusers fuse/unfuse cycles);
* the product path on the embedded toy base: ``pipeline.Studio.render`` (what ``medley generate``,
  the web app and the Python API call) for one image, 20 steps, with no adapter, with three
  catalogued adapters the first time (files read, layers wrapped), the same three again (adapter
  cache and kept fusion session: no file read) and alternating between two sets of three.

Adapter switches are timed through the base's persistent fusion session
(``pipeline.fusion_host.FusionHost.apply``), the call ``Studio.render`` makes per run.

Prints a table; with ``--json`` the last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from fusion import AdapterSpec, FusionGate, compose  # noqa: E402
from fusion.gate import GATE_DIR  # noqa: E402
from fusion.testing import diffusers_state_dict, random_lora  # noqa: E402
from library.lora import LoraAdapter, LoraModule  # noqa: E402
from pipeline.fusion_host import FusionHost  # noqa: E402
from pipeline.toy_base import TEXT_HIDDEN_SIZE, new_unet  # noqa: E402

SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
RANKS = (8, 16, 32)
CLOCK: Callable[[], float] = time.perf_counter  # --clock cpu: time.process_time (for busy machines)
WEIGHTS = (0.8, 0.6, 0.7)
ROLES = ("content", "style", "other")


class Model:
    """One UNet under test with its inputs and adapters."""

    def __init__(self, name: str, unet: UNet2DConditionModel, latent: int, context: tuple[int, int], batch: int):
        self.name, self.unet = name, unet.eval().requires_grad_(False)
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, 4, latent, latent, generator=g)
        self.e = torch.randn(batch, context[0], context[1], generator=g)
        self.loras = [random_lora(unet, r, seed, alpha=r / 2) for seed, r in enumerate(RANKS)]
        self.other_loras = [random_lora(unet, 16, 100 + seed, alpha=8) for seed in range(3)]
        self.specs = [
            AdapterSpec(f"l{i}", a, w, role=r)
            for i, (a, w, r) in enumerate(zip(self.loras, WEIGHTS, ROLES, strict=True))
        ]
        self.gate, self.gate_note = self._gate()
        self._families: dict[str, list[AdapterSpec]] = {"lora": self.specs}

    def family_specs(self, family: str) -> list[AdapterSpec]:
        """The three adapters as plain LoRAs, as LoHas (exact stacked factors) or as dense LoKr terms."""
        if family not in self._families:
            self._families[family] = [
                AdapterSpec(spec.name, loha_of(spec.adapter, 4, 50 + i, dense=family == "lokr_dense"), spec.weight,
                            role=spec.role) for i, spec in enumerate(self.specs)]
        return self._families[family]

    def _gate(self) -> tuple[FusionGate, str]:
        try:
            gate = FusionGate.load(GATE_DIR)
            if all(f"unet.{n}" in gate for n, _ in self.unet.named_modules() if n.endswith(".to_q")):
                return gate, "trained gate"
        except (FileNotFoundError, ValueError, KeyError):
            pass
        gate = FusionGate.for_unet(self.unet)
        with torch.no_grad():
            for parameter in gate.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.1)
        return gate, "random-init gate (no trained gate for this UNet)"

    def step(self, t: float) -> None:
        with torch.inference_mode():
            self.unet(self.x, torch.tensor(t), encoder_hidden_states=self.e)


def time_steps(model: Model, steps: int) -> float:
    """Mean seconds per UNet call over ``steps`` calls at successive timesteps (one warm-up call)."""
    timesteps = torch.linspace(999, 1, steps + 1).tolist()
    model.step(timesteps[0])
    started = CLOCK()
    for t in timesteps[1:]:
        model.step(t)
    return (CLOCK() - started) / steps


def medley_runner(method: str, family: str = "lora", **options: Any) -> Callable[[Model, int], float]:
    def run(model: Model, steps: int) -> float:
        if options.get("gate") == "model":
            options_now = {**options, "gate": model.gate}
        else:
            options_now = options
        with compose(model.unet, model.family_specs(family), method, **options_now):
            return time_steps(model, steps)

    return run


def loha_of(lora: LoraAdapter, rank: int, seed: int, dense: bool) -> LoraAdapter:
    """A LoHa on the same modules: rank x rank Hadamard factors (stacked exactly at rank^2), or, with ``dense``,
    a LoKr of full small factors whose exact rank is too high to stack (a dense term)."""
    from library.families.loha import LohaModule
    from library.families.lokr import LokrModule

    generator = torch.Generator().manual_seed(seed)
    modules: dict[str, Any] = {}
    for target, module in lora.modules.items():
        out, inp = module.out_features, module.in_features
        if dense:
            a = next(d for d in (4, 8, 2, 1) if out % d == 0 and inp % d == 0)
            modules[target] = LokrModule(alpha=1.0, shape=(out, inp),
                                         w1=torch.randn(a, a, generator=generator) * 0.05,
                                         w2=torch.randn(out // a, inp // a, generator=generator) * 0.05)
        else:
            modules[target] = LohaModule(
                w1a=torch.randn(out, rank, generator=generator) * 0.1, w1b=torch.randn(rank, inp, generator=generator),
                w2a=torch.randn(out, rank, generator=generator) * 0.1, w2b=torch.randn(rank, inp, generator=generator),
                alpha=float(rank), shape=(out, inp))
    return LoraAdapter(modules, source_format="lycoris")


def diffusers_runner(fused: bool) -> Callable[[Model, int], float]:
    def run(model: Model, steps: int) -> float:
        names = [spec.name for spec in model.specs]
        for spec in model.specs:
            model.unet.load_lora_adapter(diffusers_state_dict(spec.adapter), prefix="unet", adapter_name=spec.name)
        try:
            model.unet.set_adapters(names, list(WEIGHTS))
            if fused:
                model.unet.fuse_lora(adapter_names=names)
            seconds = time_steps(model, steps)
            if fused:
                model.unet.unfuse_lora()
        finally:
            model.unet.unload_lora()
        return seconds

    return run


CONFIGS: dict[str, Callable[[Model, int], float]] = {
    "base": lambda model, steps: time_steps(model, steps),
    "merge": medley_runner("merge"),
    "merge_static": medley_runner("merge", static=True),
    "gated": medley_runner("gated"),
    "gated_trained": medley_runner("gated", gate="model"),
    "switch": medley_runner("switch"),
    "klora": medley_runner("klora"),
    "merge_loha": medley_runner("merge", family="loha"),
    "merge_lokr_dense": medley_runner("merge", family="lokr_dense"),
    "diffusers_unfused": diffusers_runner(fused=False),
    "diffusers_fused": diffusers_runner(fused=True),
}


def step_times(model: Model, steps: int, repeats: int) -> dict[str, tuple[float, float]]:
    """{config: (median ms per step, median ratio to the base runs beside it)}.

    One untimed pass over every configuration first (the first UNet calls after building a
    model run up to 10% slow while the allocator grows, which once made gated look faster
    than the base). Then, in every repeat, the base runs between every two configurations
    and each configuration's ratio is to the mean of the base runs just before and after it,
    so slow drift of the machine cancels out of the ratio.
    """
    for name in CONFIGS:
        CONFIGS[name](model, 1)
    others = [name for name in CONFIGS if name != "base"]
    seconds: dict[str, list[float]] = {name: [] for name in CONFIGS}
    ratios: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for repeat in range(repeats):
        order = others[repeat % len(others) :] + others[: repeat % len(others)]  # rotate to spread drift
        before = time_steps(model, steps)
        seconds["base"].append(before)
        for name in order:
            this = CONFIGS[name](model, steps)
            after = time_steps(model, steps)
            seconds[name].append(this)
            seconds["base"].append(after)
            ratios[name].append(this / ((before + after) / 2))
            before = after
    ratios["base"] = [1.0]
    return {name: (statistics.median(seconds[name]) * 1e3, statistics.median(ratios[name])) for name in CONFIGS}


def adapter_from_diffusers(state: dict[str, torch.Tensor]) -> LoraAdapter:
    """Read back what :func:`diffusers_state_dict` wrote (scale folded into up, alpha = rank)."""
    modules = {}
    for key, down in state.items():
        if key.endswith(".lora_A.weight"):
            target = key[: -len(".lora_A.weight")]
            modules[target] = LoraModule(down=down, up=state[target + ".lora_B.weight"], alpha=float(down.shape[0]))
    return LoraAdapter(modules)


def swap_times(model: Model, repeats: int, folder: Path) -> dict[str, float]:
    """Median ms to switch from the current three adapters to another three."""
    sets = [model.specs, [AdapterSpec(f"n{i}", a, 0.7) for i, a in enumerate(model.other_loras)]]
    files = []
    for k, specs in enumerate(sets):
        paths = []
        for spec in specs:
            path = folder / f"{model.name}-{k}-{spec.name}.safetensors"
            save_file(diffusers_state_dict(spec.adapter), str(path))
            paths.append(path)
        files.append(paths)
    unseen_sets = [
        [AdapterSpec(f"u{k}{j}", random_lora(model.unet, 16, 1000 + 10 * k + j, alpha=8), 0.7) for j in range(3)]
        for k in range(repeats)
    ]
    medley, medley_disk, medley_unseen, theirs = [], [], [], []
    host = FusionHost(model.unet)  # what a loaded base holds; Studio.render swaps through it
    host.apply(sets[0], "merge", None, 20)
    try:
        for specs in unseen_sets:  # adapters never checked against this base: the full compat scan
            started = CLOCK()
            host.apply(specs, "merge", None, 20)
            medley_unseen.append(CLOCK() - started)
        for i in range(repeats * 2):
            target = sets[(i + 1) % 2]
            started = CLOCK()
            host.apply(target, "merge", None, 20)
            medley.append(CLOCK() - started)
            paths = files[(i + 1) % 2]
            started = CLOCK()
            loaded = [AdapterSpec(s.name, adapter_from_diffusers(load_file(str(p))), s.weight)
                      for s, p in zip(target, paths, strict=True)]
            host.apply(loaded, "merge", None, 20)
            medley_disk.append(CLOCK() - started)
    finally:
        host.release()
    current: list[str] = []
    try:
        for i in range(repeats * 2 + 1):
            k = i % 2
            started = CLOCK()
            if current:
                model.unet.delete_adapters(current)
            names = [f"{spec.name}-{i}" for spec in sets[k]]
            for name, path in zip(names, files[k], strict=True):
                model.unet.load_lora_adapter(load_file(str(path)), prefix="unet", adapter_name=name)
            model.unet.set_adapters(names, [spec.weight for spec in sets[k]])
            elapsed = CLOCK() - started
            if i:  # the first load also wraps every layer: not a switch
                theirs.append(elapsed)
            current = names
    finally:
        model.unet.unload_lora()
    return {
        "medley": statistics.median(medley) * 1e3,
        "medley_from_disk": statistics.median(medley_disk) * 1e3,
        "medley_unseen": statistics.median(medley_unseen) * 1e3,
        "diffusers": statistics.median(theirs) * 1e3,
    }


def render_times(repeats: int, folder: Path) -> dict[str, float]:
    """Median seconds of ``Studio.render`` (one image, 20 steps) on the embedded toy base with catalogued
    adapters: none, three the first time, the same three again, and alternating between two sets."""
    from library.catalog import Catalog
    from library.formats.writer import write_kohya
    from library.metadata import AdapterInfo
    from pipeline import Pick, RenderRequest, Studio, load_base

    base = load_base()
    catalog = Catalog(folder / "home", register_starters=False)
    names: list[list[str]] = [[], []]
    for k in range(2):
        for j in range(3):
            name = f"bench-{k}{j}"
            adapter = random_lora(base.pipe.unet, RANKS[j], 500 + 10 * k + j, alpha=RANKS[j] / 2)
            catalog.register(write_kohya(adapter, folder / f"{name}.safetensors", AdapterInfo(name=name), base="toy"))
            names[k].append(name)
    studio = Studio(base, catalog)

    def render(k: int | None) -> float:
        picks = [] if k is None else [Pick(name, 0.7) for name in names[k]]
        started = time.perf_counter()
        studio.render(RenderRequest("a red circle on a blue background", steps=20, picks=picks))
        return time.perf_counter() - started

    render(None)  # warm-up
    cold = render(0)
    plain = statistics.median(render(None) for _ in range(repeats))
    again = statistics.median(render(0) for _ in range(repeats))
    alternating = statistics.median(render(i % 2) for i in range(1, 2 * repeats + 1))
    return {"base_s": plain, "first_s": cold, "repeat_s": again, "alternate_s": alternating,
            "cache_hits": studio.adapters.stats.hits, "file_reads": studio.adapters.stats.loads}


def snapshot(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in unet.state_dict().items()}


def drift(unet: torch.nn.Module, before: dict[str, torch.Tensor]) -> float:
    after = unet.state_dict()
    if set(after) != set(before):
        return float("inf")
    return max(float((after[n].float() - before[n].float()).abs().max()) for n in before)


def medley_drift(model: Model, cycles: int) -> float:
    before = snapshot(model.unet)
    other = [AdapterSpec(f"n{i}", a, 0.7) for i, a in enumerate(model.other_loras)]
    with compose(model.unet, model.specs, "merge", static=True) as session:
        for i in range(cycles):
            session.swap(other if i % 2 == 0 else model.specs)
    return drift(model.unet, before)


def diffusers_drift(model: Model, cycles: int) -> float:
    before = snapshot(model.unet)
    names = [spec.name for spec in model.specs]
    for spec in model.specs:
        model.unet.load_lora_adapter(diffusers_state_dict(spec.adapter), prefix="unet", adapter_name=spec.name)
    model.unet.set_adapters(names, list(WEIGHTS))
    for _ in range(cycles):
        model.unet.fuse_lora(adapter_names=names)
        model.unet.unfuse_lora()
    model.unet.unload_lora()
    result = drift(model.unet, before)
    model.unet.load_state_dict(before)
    return result


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build_models(skip_sd15: bool) -> list[Model]:
    torch.manual_seed(0)
    models = [Model("toy", new_unet(), 16, (24, TEXT_HIDDEN_SIZE), 2)]
    if not skip_sd15:
        progress("building a random-weight SD1.5 UNet")
        models.append(Model("sd15", UNet2DConditionModel(**SD15_UNET), 32, (77, 768), 2))
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="timed UNet calls per configuration and repeat")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (medians are reported)")
    parser.add_argument("--swaps", type=int, default=10, help="timed adapter switches per side")
    parser.add_argument("--drift-cycles", type=int, default=100)
    parser.add_argument("--skip-sd15", action="store_true", help="only the toy UNet")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: this process's CPU time, robust on a machine busy with other work")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter

    results: dict[str, Any] = {}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, {args.clock} clock; LoRA ranks {RANKS}")
    with tempfile.TemporaryDirectory() as tmp:
        for model in build_models(args.skip_sd15):
            progress(f"{model.name}: step times")
            times = step_times(model, args.steps, args.repeats)
            progress(f"{model.name}: adapter switches")
            swaps = swap_times(model, args.swaps, Path(tmp))
            progress(f"{model.name}: drift")
            ours = medley_drift(model, args.drift_cycles)
            theirs = diffusers_drift(model, args.drift_cycles if model.name == "toy" else min(args.drift_cycles, 10))
            print(f"\n{model.name}: latent {tuple(model.x.shape)}, {len(model.specs[0].adapter.modules)} LoRA layers")
            print(f"  {'configuration':<22}{'ms/step':>10}{'x base':>9}")
            for name, (ms, ratio) in times.items():
                note = f"  ({model.gate_note})" if name == "gated_trained" else ""
                print(f"  {name:<22}{ms:>10.1f}{ratio:>9.3f}{note}")
            print(f"  switch to 3 other adapters: Medley {swaps['medley']:.1f} ms in memory "
                  f"({swaps['medley_unseen']:.1f} ms for never-seen adapters, full compat check; "
                  f"{swaps['medley_from_disk']:.1f} ms reading the files), diffusers {swaps['diffusers']:.1f} ms")
            print(f"  base drift after {args.drift_cycles} Medley swaps (static merge): {ours:g}; "
                  f"after diffusers fuse/unfuse cycles: {theirs:g}")
            results[model.name] = {"times": times, "swaps": swaps, "drift": ours, "diffusers_drift": theirs,
                                   "gate_note": model.gate_note}
    progress("product path: Studio.render on the toy base")
    with tempfile.TemporaryDirectory() as tmp:
        product = render_times(args.repeats, Path(tmp))
    print(f"\nproduct path (Studio.render, toy base, 1 image, 20 steps): no adapter {product['base_s']:.3f} s; "
          f"3 adapters first time {product['first_s']:.3f} s, again {product['repeat_s']:.3f} s, alternating "
          f"two sets {product['alternate_s']:.3f} s; {product['file_reads']} file reads, "
          f"{product['cache_hits']} cache hits")
    main_model = results.get("sd15", results["toy"])
    summary = {
        "model": "sd15" if "sd15" in results else "toy",
        "gated_over_base": round(main_model["times"]["gated"][1], 4),
        "gated_trained_over_base": round(main_model["times"]["gated_trained"][1], 4),
        "gated_trained_gate": main_model["gate_note"],
        "merge_over_base": round(main_model["times"]["merge"][1], 4),
        "merge_static_over_base": round(main_model["times"]["merge_static"][1], 4),
        "switch_over_base": round(main_model["times"]["switch"][1], 4),
        "klora_over_base": round(main_model["times"]["klora"][1], 4),
        "merge_loha_over_base": round(main_model["times"]["merge_loha"][1], 4),
        "merge_lokr_dense_over_base": round(main_model["times"]["merge_lokr_dense"][1], 4),
        "diffusers_unfused_over_base": round(main_model["times"]["diffusers_unfused"][1], 4),
        "diffusers_fused_over_base": round(main_model["times"]["diffusers_fused"][1], 4),
        "switch_ms_sd15": round(results["sd15"]["swaps"]["medley"], 2) if "sd15" in results else None,
        "switch_unseen_ms_sd15": round(results["sd15"]["swaps"]["medley_unseen"], 2) if "sd15" in results else None,
        "diffusers_switch_ms_sd15": round(results["sd15"]["swaps"]["diffusers"], 2) if "sd15" in results else None,
        "switch_ms_toy": round(results["toy"]["swaps"]["medley"], 2),
        "drift_max_abs": max(r["drift"] for r in results.values()),
        "diffusers_drift_max_abs": max(r["diffusers_drift"] for r in results.values()),
        "render_base_s": round(product["base_s"], 4),
        "render_first_s": round(product["first_s"], 4),
        "render_repeat_s": round(product["repeat_s"], 4),
        "render_alternate_s": round(product["alternate_s"], 4),
        "render_file_reads": product["file_reads"],
        "steps": args.steps,
        "repeats": args.repeats,
        "clock": args.clock,
    }
    print("\ntargets: gated <= 1.05x base, switch < 50 ms, drift exactly 0")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
