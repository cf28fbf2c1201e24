import pytest

from toyworld.dataset import JUDGE_VOCAB, SEEDS_JUDGE_EVAL, make_samples
from toyworld.judge import Judge, accuracy, read_labels


def test_judge_reads_fresh_images():
    # seeds the judge never trained on; the full vocabulary, novel concepts included
    judge = Judge.load()
    samples = make_samples(range(SEEDS_JUDGE_EVAL + 100_000, SEEDS_JUDGE_EVAL + 100_600), **JUDGE_VOCAB)
    scores = accuracy(read_labels(judge, samples.images), [s.labels() for s in samples.scenes])
    assert set(scores) == {"shape", "foreground", "background", "texture", "palette"}
    for attribute, value in scores.items():
        assert value >= 0.95, (attribute, value)


@pytest.mark.xfail(strict=True, reason="known defect of the shipped judge: it never saw an image without a shape and "
                   "reads a uniform gray image's background as black; retrain it with blank images")
def test_judge_is_not_fooled_by_a_blank_image():
    import numpy as np

    judge = Judge.load()
    blank = np.full((1, 32, 32, 3), 128, dtype=np.uint8)
    read = read_labels(judge, blank)[0]
    assert read["background"] == "gray"
