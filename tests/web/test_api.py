"""The web app's API through gradio_client: /generate, /plan, /search, /library_list, /import_adapter, /train.

One server per module, on a free localhost port, over a tiny random toy base (no assets needed)
and a small synthetic library.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from test_web_support import SYNTHETIC, make_services, start_server  # noqa: E402


@pytest.fixture(scope="module")
def web_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("web") / "medley-home"


@pytest.fixture(autouse=True)
def medley_home(web_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One MEDLEY_HOME for the whole module: the server outlives each test."""
    monkeypatch.setenv("MEDLEY_HOME", str(web_home))
    return web_home


@pytest.fixture(scope="module")
def server(web_home: Path):  # type: ignore[no-untyped-def]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDLEY_HOME", str(web_home))
        services = make_services(web_home)
        app, url = start_server(services)
        try:
            yield services, app, url
        finally:
            app.close()


@pytest.fixture(scope="module")
def client(server):  # type: ignore[no-untyped-def]
    return gradio_client.Client(server[2], verbose=False, download_files=True)


def _pixels(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _image_path(item: object) -> str:
    return item["image"] if isinstance(item, dict) else item[0]  # type: ignore[index]


def test_api_names_are_published(client) -> None:  # type: ignore[no-untyped-def]
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/generate", "/plan", "/search", "/library_list", "/import_adapter", "/train"} <= names


def test_generate_returns_images_with_provenance(server, client) -> None:  # type: ignore[no-untyped-def]
    result = client.predict(prompt="a red circle on a blue background <lora:heart:0.5>", seed=7, steps=2, batch=2,
                            api_name="/generate")
    gallery, provenance, final_prompt, _table = result
    assert isinstance(provenance, list) and isinstance(provenance[0], dict), repr(result)[:3000]
    assert len(gallery) == 2 and len(provenance) == 2
    assert [p["seed"] for p in provenance] == [7, 8]
    assert provenance[0]["adapters"][0]["alias"] == "heart"
    assert provenance[0]["adapters"][0]["weight"] == 0.5
    assert final_prompt.startswith("hartok, a red circle")  # tag stripped, trigger word added
    assert "<lora:" not in provenance[0]["prompt"]
    # the PNGs carry the A1111 parameters chunk
    from pipeline import read_parameters

    assert "Seed: 7" in (read_parameters(_image_path(gallery[0])) or "")
    assert Path(provenance[0]["file"]).is_relative_to(server[0].outputs_dir())


def test_generate_with_manual_table_rows(client) -> None:  # type: ignore[no-untyped-def]
    table = {"headers": ["use", "adapter", "weight", "role", "source", "concept", "reasons"],
             "data": [[True, "zigzag", 0.3, "", "manual", "", ""], [False, "sunset", 1.0, "", "manual", "", ""]]}
    _, provenance, final_prompt, _ = client.predict(prompt="a square", steps=1, adapters=table, fusion="merge",
                                                    api_name="/generate")
    assert [a["alias"] for a in provenance[0]["adapters"]] == ["zigzag"]
    assert "zigzor" in final_prompt


def test_generate_rejects_an_unknown_adapter(client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Exception, match="nosuch"):
        client.predict(prompt="a circle <lora:nosuch:1>", steps=1, api_name="/generate")


def test_plan_and_search_find_adapters_by_meaning(client) -> None:  # type: ignore[no-untyped-def]
    _, hits = client.predict(query="a heart shape", base="any", kind="any", api_name="/search")
    assert hits and hits[0]["name"] == "heart"
    _, styles = client.predict(query="a heart shape", base="any", kind="style", api_name="/search")
    assert all(hit["kind"] == "style" for hit in styles)
    table = client.predict(prompt_text="a hartok heart shape", api_name="/plan")
    rows = table["data"] if isinstance(table, dict) else table
    assert any(row[1] == "heart" and row[4] == "auto" for row in rows)


def test_library_list_and_filters(client) -> None:  # type: ignore[no-untyped-def]
    cards, records = client.predict(base="any", kind="any", api_name="/library_list")
    names = {r["name"] for r in records}
    assert {name for name, *_ in SYNTHETIC} <= names
    assert len(cards) == len(records)
    _, content = client.predict(base="toy", kind="content", api_name="/library_list")
    assert {r["name"] for r in content} >= {"heart"} and all(r["kind"] == "content" for r in content)


def test_import_adapter_upload(client, tmp_path: Path, web_home: Path) -> None:  # type: ignore[no-untyped-def]
    from library.synthetic import write_small_kohya

    path = write_small_kohya(tmp_path / "uploaded-lora.safetensors", seed=5)
    status, record = client.predict(file=gradio_client.handle_file(str(path)), name="uploaded", kind="style",
                                    api_name="/import_adapter")
    assert record["name"] == "uploaded" and record["kind"] == "style"
    assert "uploaded" in status
    assert any((web_home / "adapters").glob("uploaded*.safetensors"))  # copied under MEDLEY_HOME/adapters
    bad = tmp_path / "weights.ckpt"
    bad.write_bytes(b"not a lora")
    with pytest.raises(Exception, match="safetensors"):
        client.predict(file=gradio_client.handle_file(str(bad)), name="", kind="any", api_name="/import_adapter")


def test_concurrent_generates_match_solo_renders(server, client) -> None:  # type: ignore[no-untyped-def]
    """20 requests at once (some with adapters) each give the image a solo render gives."""
    from fusion import AdapterSpec
    from pipeline import generate

    services = server[0]
    prompts = [f"a {colour} circle" + (" <lora:heart:0.6>" if i % 3 == 0 else "")
               for i, colour in enumerate(["red", "blue", "green", "yellow", "pink"] * 4)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        jobs = [pool.submit(client.predict, prompt=prompt, seed=100 + i, steps=2, api_name="/generate")
                for i, prompt in enumerate(prompts)]
        results = [job.result(timeout=600) for job in jobs]
    heart = AdapterSpec("heart", services.catalog.load_adapter("heart"), weight=0.6, role="content")
    for i, (prompt, (gallery, provenance, final_prompt, _)) in enumerate(zip(prompts, results, strict=True)):
        assert provenance[0]["seed"] == 100 + i
        adapters = [heart] if "<lora:" in prompt else []
        solo = generate(services.base, final_prompt, seed=100 + i, steps=2, adapters=adapters).images[0]
        np.testing.assert_array_equal(_pixels(_image_path(gallery[0])), np.asarray(solo.convert("RGB")))


def test_train_adds_an_adapter_to_the_library(client) -> None:  # type: ignore[no-untyped-def]
    status, _losses, _samples, summary = client.predict(
        images=[], concept="heart (hartok, content)", trigger="hartok", class_prompt="a shape", name="web-heart",
        steps=2, rank=2, prior_preservation=False, cat=True, b4m_role="none", kind="content", api_name="/train")
    assert summary["status"] == "done", status
    assert summary["adapter"] == "web-heart"
    _, records = client.predict(base="any", kind="any", api_name="/library_list")
    trained = next(r for r in records if r["name"] == "web-heart")
    assert trained["source"] == "trained" and trained["triggers"] == ["hartok"]
