"""The composition engine: LoRA layers injected into the base, per layer and per step."""
