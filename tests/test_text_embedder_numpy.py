"""The NumPy MiniLM path of the text embedder agrees with sentence-transformers, and search stays light."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval.embedders.numpy_bert import BATCH, BATCH_TOKENS, NumpyBertEncoder, _batches, supports
from retrieval.embedders.text import TextEmbedder, default_text_model_path

ROOT = Path(__file__).resolve().parent.parent
TEXTS = [
    "a red circle on a blue background",
    "hartok",
    "",
    "   ",
    "Café naïve — ẞ 日本語のテキスト, émojis 🙂 and UPPER case",
    "word " * 400,  # past max_seq_length: truncated the same way
    "a yellow striped square on a black background, with a glowing halo around the shape",
    *(f"adapter {i}: a toy-world style with {i} diagonal stripes" for i in range(70)),  # more than one batch
]


@pytest.fixture(scope="module")
def minilm() -> Path:
    return default_text_model_path()


def test_the_bundled_minilm_runs_with_numpy_and_matches_sentence_transformers(minilm: Path) -> None:
    fast, reference = TextEmbedder(), TextEmbedder(backend="sentence-transformers")
    assert fast.uses_numpy and not reference.uses_numpy
    assert fast.name == reference.name and fast.dimension == reference.dimension == 384
    ours, theirs = fast.embed(TEXTS), reference.embed(TEXTS)
    assert ours.shape == theirs.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    one_by_one = np.concatenate([fast.embed([text]) for text in TEXTS[:6]])
    np.testing.assert_allclose(one_by_one, ours[:6], atol=2e-6)  # batching and padding change nothing


def test_tokens_are_sentence_transformers_tokens(minilm: Path) -> None:
    encoder = NumpyBertEncoder(minilm)
    tokenizer = TextEmbedder(backend="sentence-transformers").model.tokenizer
    expected = tokenizer(TEXTS, truncation=True, max_length=256)["input_ids"]
    assert [encoding.ids for encoding in encoder.tokenizer.encode_batch(TEXTS)] == expected
    assert encoder.max_length == 256


def _copy(minilm: Path, tmp_path: Path, edit: str, change: object) -> Path:
    folder = tmp_path / f"model-{len(list(tmp_path.iterdir()))}"
    shutil.copytree(minilm, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx"))
    (folder / "model.safetensors").symlink_to(minilm / "model.safetensors")
    path = folder / edit
    data = json.loads(path.read_text())
    if callable(change):
        change(data)
    else:
        data.update(change)
    path.write_text(json.dumps(data))
    return folder


def test_only_plain_bert_mean_pooling_folders_take_the_numpy_path(minilm: Path, tmp_path: Path) -> None:
    assert supports(minilm)
    others = [
        _copy(minilm, tmp_path, "1_Pooling/config.json", {"pooling_mode_mean_tokens": False,
                                                          "pooling_mode_cls_token": True}),
        _copy(minilm, tmp_path, "config.json", {"model_type": "roberta"}),
        _copy(minilm, tmp_path, "config.json", {"hidden_act": "gelu_new"}),
        _copy(minilm, tmp_path, "sentence_bert_config.json", {"do_lower_case": True}),
        _copy(minilm, tmp_path, "modules.json", lambda modules: modules.append(
            {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})),
    ]
    for folder in others:
        assert not supports(folder), folder.name
        assert not TextEmbedder(folder).uses_numpy
    assert not TextEmbedder(minilm, device="cuda").uses_numpy  # other devices keep sentence-transformers
    from retrieval.embedders.text import EmbedderUnavailableError

    with pytest.raises(EmbedderUnavailableError, match="NumPy"):
        TextEmbedder(others[0], backend="numpy")
    with pytest.raises(ValueError, match="backend"):
        TextEmbedder(backend="onnx")


def test_batches_bound_texts_and_padded_tokens() -> None:
    lengths = [3] * 150 + [256, 7, 200]
    groups = list(_batches(lengths))
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
    for group in groups:
        assert len(group) <= BATCH
        assert len(group) == 1 or len(group) * max(lengths[i] for i in group) <= BATCH_TOKENS


def test_search_embeds_without_sentence_transformers(tmp_path: Path) -> None:
    """A fresh process that searches with the default embedder never imports sentence-transformers."""
    code = (
        "import sys\n"
        "from retrieval import Retriever\n"
        "from library.records import AdapterRecord\n"
        "record = AdapterRecord(id=1, sha256='ab' * 32, name='ring', title='Ring', path='ring.safetensors',"
        " format='kohya', base='toy', rank=4, kind='content', triggers=['anulon'])\n"
        "results = Retriever([record], persist=False).search('a ring shape', k=1)\n"
        "assert [r.name for r in results] == ['ring']\n"
        "print(sorted(m for m in ('sentence_transformers', 'transformers', 'open_clip') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**_env(), "MEDLEY_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def _env() -> dict[str, str]:
    import os

    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | {"PYTHONPATH": str(ROOT)}
