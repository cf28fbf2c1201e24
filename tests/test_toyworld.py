import numpy as np
import pytest

from toyworld import (
    ALL_SHAPES,
    ALL_TEXTURES,
    BASE_SHAPES,
    BASE_TEXTURES,
    FOREGROUND_COLOURS,
    NOVEL_PALETTES,
    NOVEL_SHAPES,
    NOVEL_TEXTURES,
    PALETTES,
    Scene,
    caption,
    generate,
    novel_concept,
    render,
    sample_scene,
)


def test_same_seed_same_sample():
    a_image, a_caption, a_labels = generate(123)
    b_image, b_caption, b_labels = generate(123)
    assert np.array_equal(a_image, b_image)
    assert a_caption == b_caption and a_labels == b_labels


def test_different_seeds_differ():
    images = [generate(seed)[0] for seed in range(20)]
    assert len({image.tobytes() for image in images}) == 20


def test_image_format():
    image, text, labels = generate(7)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert set(labels) == {"shape", "foreground", "background", "texture", "palette"}
    assert labels["shape"] in text


def test_vocabulary_sizes():
    assert len(BASE_SHAPES) >= 6 and len(FOREGROUND_COLOURS) >= 8 and len(BASE_TEXTURES) >= 4
    assert len(NOVEL_SHAPES) >= 8 and len(NOVEL_TEXTURES) >= 8
    triggers = [c.trigger for c in NOVEL_SHAPES + NOVEL_TEXTURES + NOVEL_PALETTES]
    assert len(set(triggers)) == len(triggers)


def test_base_sampling_never_uses_novel_concepts():
    for seed in range(300):
        scene = sample_scene(seed)
        assert scene.shape in BASE_SHAPES and scene.texture in BASE_TEXTURES and scene.palette == "plain"
        assert scene.foreground != scene.background


def test_novel_concepts_use_trigger_words_in_captions():
    heart = novel_concept("heart")
    scene = Scene(shape="heart", foreground="red", background="blue", texture="diagonal", palette="pastel")
    text = caption(scene)
    assert heart.trigger in text
    assert novel_concept("diagonal").trigger in text
    assert novel_concept("pastel").trigger in text
    assert "heart" not in text


@pytest.mark.parametrize("content", [c.name for c in NOVEL_SHAPES])
def test_every_content_style_pair_renders(content):
    # composed ground truth exists for every content x style pair
    renders = {
        style.name: render(Scene(shape=content, foreground="red", background="black", texture=style.name))
        for style in NOVEL_TEXTURES
    }
    assert len({image.tobytes() for image in renders.values()}) == len(NOVEL_TEXTURES)


def test_all_shapes_textures_palettes_render_distinctly():
    base = Scene(shape="circle", foreground="red", background="black")
    shapes = {render(base.with_(shape=s)).tobytes() for s in ALL_SHAPES}
    textures = {render(base.with_(texture=t)).tobytes() for t in ALL_TEXTURES}
    palettes = {render(base.with_(palette=p)).tobytes() for p in PALETTES}
    assert len(shapes) == len(ALL_SHAPES)
    assert len(textures) == len(ALL_TEXTURES)
    assert len(palettes) == len(PALETTES)


def test_unknown_concept_is_a_clear_error():
    with pytest.raises(KeyError, match="no novel concept"):
        novel_concept("unicorn")
