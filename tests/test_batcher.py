"""The batching scheduler: concurrent requests with different adapters share passes; a bad one fails alone."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fusion.testing import random_lora
from library.catalog import Catalog
from library.errors import LibraryError
from library.formats.writer import write_kohya
from library.metadata import AdapterInfo
from pipeline import Pick, RenderRequest, Studio
from pipeline.batcher import RenderBatcher
from training.testing import random_toy_base


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    root = tmp_path_factory.mktemp("batcher")
    base = random_toy_base()
    catalog = Catalog(root / "home", register_starters=False)
    for seed, name in enumerate(("alpha", "beta", "gamma")):
        adapter = random_lora(base.pipe.unet, 4, seed, alpha=4, strength=2.0)
        catalog.register(write_kohya(adapter, root / f"{name}.safetensors", AdapterInfo(name=name), base="toy"))
    return Studio(base, catalog)


SETS = [[Pick("alpha", 0.8)], [Pick("beta", 0.7), Pick("gamma", 0.5)], [], [Pick("gamma", 1.0)]]


def request(index: int, picks) -> RenderRequest:
    return RenderRequest(f"a red circle number {index}", seed=10 + index, steps=3, picks=picks)


def test_concurrent_requests_batch_and_each_matches_its_solo_render(studio):
    batcher = RenderBatcher(studio, max_batch=8, max_wait_s=0.5)
    try:
        requests = [request(i, SETS[i % len(SETS)]) for i in range(6)] + [request(6, [Pick("nosuch")])]
        steps: list[list[int]] = [[] for _ in requests]
        with ThreadPoolExecutor(len(requests)) as pool:
            futures = [pool.submit(batcher.render, r, (lambda k: lambda d, t: steps[k].append(d))(i), 120)
                       for i, r in enumerate(requests)]
            answers = []
            for future in futures:
                try:
                    answers.append(future.result(timeout=300))
                except LibraryError as error:
                    answers.append(error)
        assert isinstance(answers[-1], LibraryError) and "nosuch" in str(answers[-1])  # that request only
        assert batcher.stats.batches < 6 and batcher.stats.failed == 1  # they rode together
        assert all(steps[i] and steps[i][-1] == max(steps[i]) for i in range(6))  # progress reached each
        for i, outcome in enumerate(answers[:-1]):
            solo = studio.render(requests[i])
            difference = np.abs(np.asarray(solo.images[0], dtype=int) - np.asarray(outcome.images[0], dtype=int))
            assert difference.max() <= 1, (i, difference.max())
            assert [a["alias"] for a in outcome.provenance[0].adapters] == [p.name for p in SETS[i % len(SETS)]]
    finally:
        batcher.close()
    status = studio.status()
    assert status["adapter_cache"]["loads"] == 3 and status["adapter_cache"]["hits"] > 0


def test_batcher_settings_are_checked(studio):
    with pytest.raises(ValueError, match="max_batch"):
        RenderBatcher(studio, max_batch=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        RenderBatcher(studio, max_wait_s=-1)
