"""The composition engine: LoRA layers injected into the base, per layer and per step.

    from fusion import AdapterSpec, compose, FUSION_METHODS

    spec = AdapterSpec(name="hartok", adapter=lora, weight=0.8, role="content")
    with compose(pipe, [spec, ...], method="gated") as session:
        image = pipe(prompt=..., num_inference_steps=20).images[0]
        record = session.describe()   # method, options, adapters: for provenance
"""

from fusion.gate import FusionGate
from fusion.methods import FUSION_METHODS, FusionMethod
from fusion.prompt_syntax import LoraReference, parse_prompt
from fusion.schedule import Schedule
from fusion.session import FusionSession, compose
from fusion.spec import AdapterSpec

__all__ = [
    "FUSION_METHODS",
    "AdapterSpec",
    "FusionGate",
    "FusionMethod",
    "FusionSession",
    "LoraReference",
    "Schedule",
    "compose",
    "parse_prompt",
]
