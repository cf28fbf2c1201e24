"""Prompt tags, schedules, block weights and trigger words."""

import pytest
import torch

from fusion import AdapterSpec, Schedule, blocks, parse_prompt
from fusion.prompt_syntax import parse_tag
from library.lora import LoraAdapter
from library.triggers import add_triggers


def test_tags_are_parsed_out_of_the_prompt():
    prompt, refs = parse_prompt("a red circle, <lora:hartok:0.8>, on blue <LORA:ink:te=0.5:unet=1>")
    assert prompt == "a red circle, on blue"
    assert [(r.alias, r.weight, r.te_weight, r.unet_weight) for r in refs] == [
        ("hartok", 0.8, None, None),
        ("ink", 1.0, 0.5, 1.0),
    ]
    assert parse_prompt("no tags here") == ("no tags here", [])


@pytest.mark.parametrize(
    "body, weight, te, unet",
    [
        ("x", 1.0, None, None),
        ("x:-0.5", -0.5, None, None),
        ("x:0.4:0.9", 0.4, 0.4, 0.9),  # A1111 positional: te then unet
        ("x:w=.7:dyn=8", 0.7, None, None),
        ("x:unet=0.2", 1.0, None, 0.2),
    ],
)
def test_weight_forms(body, weight, te, unet):
    ref = parse_tag(body)
    assert (ref.weight, ref.te_weight, ref.unet_weight) == (weight, te, unet)


def test_step_schedules():
    start = parse_tag("x:0.8@0.5").schedule
    assert [start(p) for p in (0.0, 0.49, 0.5, 1.0)] == [0.0, 0.0, 1.0, 1.0]
    window = parse_tag("x:0.8@20%-60%").schedule
    assert [window(p) for p in (0.1, 0.2, 0.59, 0.6)] == [0.0, 1.0, 1.0, 0.0]
    curve = parse_tag("x:1@0=1,1=0.5").schedule
    assert curve(0.5) == pytest.approx(0.75) and curve(1.0) == 0.5
    named = parse_tag("x:unet=0.8@0.25-0.75")
    assert named.unet_weight == 0.8 and named.schedule == Schedule.window(0.25, 0.75)
    assert Schedule.parse(Schedule.window(0.25, 0.75).to_text()) == Schedule.window(0.25, 0.75)
    assert Schedule.parse(Schedule.curve([(0, 1), (1, 0)]).to_text()) == Schedule.curve([(0, 1), (1, 0)])


@pytest.mark.parametrize("bad", ["<lora::1>", "<lora:x:abc>", "<lora:x:1@1.5>", "<lora:x:1@0.6-0.2>", "<lora:x:q=1>"])
def test_malformed_tags_are_errors(bad):
    with pytest.raises(ValueError):
        parse_prompt(bad)


def test_spec_from_reference_and_component_weights():
    _, [ref] = parse_prompt("<lora:ink:0.4:0.9@0.5>")
    spec = AdapterSpec.from_reference(ref, LoraAdapter({}), role="style")
    assert spec.component_weight("unet") == 0.9 and spec.component_weight("text_encoder") == 0.4
    assert spec.schedule(0.7) == 1.0 and spec.describe()["schedule"] == "0.5"
    with pytest.raises(ValueError, match="role"):
        AdapterSpec("x", LoraAdapter({}), role="texture")


def test_block_weights_resolve_per_module():
    weights = {"down": 0.5, "mid": 0.0, "up": {"block_1": [0.2, 1.5], "block_2": 3.0}}
    m = blocks.multiplier
    assert m(weights, "unet", "down_blocks.2.attentions.0.transformer_blocks.0.attn1.to_q") == 0.5
    assert m(weights, "unet", "down_blocks.0.resnets.0.conv1") == 0.5
    assert m(weights, "unet", "mid_block.attentions.0.proj_in") == 0.0
    assert m(weights, "unet", "up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k") == 1.5
    assert m(weights, "unet", "up_blocks.1.resnets.0.conv1") == 1.0  # a per-layer list covers attentions only
    assert m(weights, "unet", "up_blocks.2.resnets.0.conv1") == 3.0
    assert m(weights, "unet", "up_blocks.0.attentions.0.proj_out") == 1.0
    assert m(weights, "unet", "conv_in") == 1.0
    assert m(weights, "text_encoder", "encoder.layer.0.attention.self.query") == 1.0
    per_component = {"unet": 0.3, "text_encoder": 0.6}
    assert m(per_component, "unet", "conv_in") == 0.3 and m(per_component, "text_encoder", "x") == 0.6
    with pytest.raises(ValueError):
        blocks.validate({"sideways": 1.0})
    with pytest.raises(ValueError):
        blocks.validate({"up": {"block1": 1.0}})


def test_block_weights_are_checked_against_the_unet():
    from pipeline.toy_base import new_unet

    torch.manual_seed(0)
    unet = new_unet()
    blocks.validate({"up": {"block_1": [0.0, 1.0]}}, unet)
    with pytest.raises(ValueError, match="3 up blocks"):
        blocks.validate({"up": {"block_5": 1.0}}, unet)
    with pytest.raises(ValueError, match="transformer layers"):
        blocks.validate({"up": {"block_1": [0.0, 1.0, 2.0, 3.0]}}, unet)


def test_trigger_words_are_added_when_missing():
    assert add_triggers("a red circle", ["zorbl"]) == "zorbl, a red circle"
    assert add_triggers("a red Zorbl on blue", ["zorbl", "inkwash style"]) == "inkwash style, a red Zorbl on blue"
    assert add_triggers("a zorblish thing", ["zorbl"]) == "zorbl, a zorblish thing"  # whole words only
    assert add_triggers("x", ["", "  "]) == "x"
    assert add_triggers("a b", ["t", "t"]) == "t, a b"
    # per adapter: none of its triggers present -> its first one; one of them present -> none
    assert add_triggers("a circle", [["zorbl", "blob"], ["wav"]]) == "zorbl, wav, a circle"
    assert add_triggers("a blob circle", [["zorbl", "blob"]]) == "a blob circle"
