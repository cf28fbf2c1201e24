"""Prompt words the embedded toy base cannot draw, by the slot they stand in."""

from toyworld.prompt_check import unknown_words


def slots(prompt):
    return [(u.word, u.slot) for u in unknown_words(prompt)]


def test_words_outside_the_base_vocabulary_are_found_by_slot():
    assert slots("a black circle on a blue background") == [("black", "shape colour")]
    assert slots("a white triangle on a black background") == [("white", "shape colour")]
    assert slots("a red hexagon on a brown background") == [("hexagon", "shape"), ("brown", "background colour")]
    assert slots("a wavy green star on a grey background") == [("wavy", "texture")]  # grey is gray
    assert slots("a yellow striped square on a black background") == []
    assert slots("a hartok with slantor stripes") == []  # trigger words are not colour/shape/texture words


def test_the_message_names_what_the_base_knows_and_the_adapters_that_add_it():
    (black,) = unknown_words("a black circle")
    assert black.known[:3] == ("red", "orange", "yellow")
    assert black.message().endswith("no library adapter adds it")
    assert "toy-x (trigger y)" in black.message(("toy-x (trigger y)",))
