"""The web app's API through gradio_client: /generate, /plan, /search, /library_list, /import_adapter, /train.

One server for the module (see conftest.py): a tiny random toy base and a small synthetic library.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

gradio_client = pytest.importorskip("gradio_client")

from test_web_support import SYNTHETIC  # noqa: E402

from web.servers import WebServer  # noqa: E402


@pytest.fixture(scope="module")
def client(server: WebServer) -> Any:
    return gradio_client.Client(server.url, verbose=False, download_files=True)


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
    gallery, provenance, final_prompt, _table, notes = result
    assert notes == ""  # every word of the prompt is one the base (or the heart adapter) draws
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
    assert Path(provenance[0]["file"]).is_relative_to(server.services.outputs_dir())


def test_generate_with_manual_table_rows(client) -> None:  # type: ignore[no-untyped-def]
    table = {"headers": ["use", "adapter", "weight", "role", "source", "concept", "reasons"],
             "data": [[True, "zigzag", 0.3, "", "manual", "", ""], [False, "sunset", 1.0, "", "manual", "", ""]]}
    _, provenance, final_prompt, _, _ = client.predict(prompt="a square", steps=1, adapters=table, fusion="merge",
                                                    api_name="/generate")
    assert [a["alias"] for a in provenance[0]["adapters"]] == ["zigzag"]
    assert "zigzor" in final_prompt


def test_generate_says_which_words_the_base_cannot_draw(client) -> None:  # type: ignore[no-untyped-def]
    *_, notes = client.predict(prompt="a white heart on a black background", steps=1, api_name="/generate")
    assert "'white' as a shape colour (it knows red, orange" in notes
    assert "'heart' as a shape" in notes and "heart (trigger hartok)" in notes  # the adapter that adds it
    assert "'black'" not in notes  # a background colour it knows


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

    services = server.services
    prompts = [f"a {colour} circle" + (" <lora:heart:0.6>" if i % 3 == 0 else "")
               for i, colour in enumerate(["red", "blue", "green", "yellow", "pink"] * 4)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        jobs = [pool.submit(client.predict, prompt=prompt, seed=100 + i, steps=2, api_name="/generate")
                for i, prompt in enumerate(prompts)]
        results = [job.result(timeout=600) for job in jobs]
    heart = AdapterSpec("heart", services.catalog.load_adapter("heart"), weight=0.6, role="content")
    for i, (prompt, (gallery, provenance, final_prompt, *_)) in enumerate(zip(prompts, results, strict=True)):
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


def test_gated_curves_reach_the_method(client, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The schedule editor's curves go to the gated method as content_curve= / style_curve=."""
    from fusion.methods.gated import DEFAULT_UNCOND, GatedMethod

    seen: list[dict[str, str]] = []
    prepare = GatedMethod.prepare

    def recording(self: GatedMethod, specs: Any, components: Any) -> Any:
        seen.append({role: curve.to_text() for role, curve in self.curves.items() if curve is not None})
        return prepare(self, specs, components)

    monkeypatch.setattr(GatedMethod, "prepare", recording)
    _, provenance, _, _, _ = client.predict(prompt="a heart <lora:heart:0.5> <lora:zigzag:0.5>", steps=2,
                                         fusion="gated", content_curve="0=0, 50%=1, 1=0.25", style_curve=" ",
                                         api_name="/generate")
    assert seen == [{"content": "0=0,0.5=1,1=0.25"}]  # an empty field: no curve for that role
    assert provenance[0]["fusion"] == "gated"
    assert provenance[0]["fusion_options"] == {"content_curve": "0=0,0.5=1,1=0.25", "style_curve": None,
                                               "uncond": DEFAULT_UNCOND}  # the editor's gains, at their defaults
    _, merged, _, _, _ = client.predict(prompt="a heart <lora:heart:0.5>", steps=1, fusion="merge",
                                     content_curve="0=0", api_name="/generate")
    assert merged[0]["fusion_options"] == {}  # the curves only go to the gated method


def test_guidance_gains_reach_the_gated_method(client, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The editor's unconditional-half weights go to the gated method as uncond=; out of 0..1 is refused."""
    from fusion.methods.gated import DEFAULT_UNCOND, GatedMethod

    seen: list[dict[str, float]] = []
    prepare = GatedMethod.prepare

    def recording(self: GatedMethod, specs: Any, components: Any) -> Any:
        seen.append(dict(self.uncond))
        return prepare(self, specs, components)

    monkeypatch.setattr(GatedMethod, "prepare", recording)
    _, provenance, _, _, _ = client.predict(prompt="a heart <lora:heart:0.5> <lora:zigzag:0.5>", steps=2,
                                         fusion="gated", uncond_content=0.25, api_name="/generate")
    assert seen == [{**DEFAULT_UNCOND, "content": 0.25}]
    assert provenance[0]["fusion_options"]["uncond"] == {**DEFAULT_UNCOND, "content": 0.25}
    client.predict(prompt="a heart <lora:heart:0.5>", steps=1, fusion="gated", api_name="/generate")
    assert seen[-1] == DEFAULT_UNCOND  # fields left alone: the editor shows the method's defaults
    with pytest.raises(Exception, match="greater than maximum value 1"):  # the field's own bound
        client.predict(prompt="a heart", steps=1, fusion="gated", uncond_style=1.5, api_name="/generate")
    from app.web.schedule_editor import fusion_options
    from app.web.services import WebInputError

    with pytest.raises(WebInputError, match="unconditional half must lie in 0..1"):  # a direct call
        fusion_options("gated", "", "", None, -0.5)


def test_a_bad_gated_curve_is_a_clear_error(client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Exception, match="content curve") as error:
        client.predict(prompt="a heart <lora:heart:0.5>", steps=1, fusion="gated", content_curve="0=1, 1=banana",
                       api_name="/generate")
    assert "fraction=value" in str(error.value)
    with pytest.raises(Exception, match="style curve"):
        client.predict(prompt="a heart", steps=1, fusion="gated", style_curve="1=1, 0=0.5, 2=1", api_name="/generate")


def test_schedule_editor_plots_each_role_per_step() -> None:
    from app.web.schedule_editor import curve_frame, default_text, fusion_options, parse_curve
    from fusion.methods.gated import DEFAULT_CURVES

    assert default_text("content") == ",".join(f"{f:g}={w:g}" for f, w in DEFAULT_CURVES["content"])
    frame = curve_frame(default_text("content"), default_text("style"), 10)
    assert list(frame.columns) == ["step", "weight", "role"] and len(frame) == 20
    first = frame[frame.step == 1].set_index("role").weight
    assert (first["content"], first["style"]) == (1.0, 0.0)  # the defaults at the first (noisiest) step: style silent
    flat = curve_frame("", "0.5", 4)  # no content curve: weight 1; a window from half-way
    assert flat[flat.role == "content"].weight.tolist() == [1.0] * 4
    assert flat[flat.role == "style"].weight.tolist() == [0.0, 0.0, 1.0, 1.0]
    assert parse_curve("style", " ,, ") is None
    assert fusion_options("merge", "0=1", "0=1") == {}
    assert fusion_options("merge", "", "", 0.0, 0.0) == {}  # the guidance gains only go to the gated method
    with pytest.raises(ValueError, match="content curve 'x=1'"):
        fusion_options("gated", "x=1", "")


def _planned(name: str, weight: float, concept: int = 0) -> Any:
    from retrieval.plan import PlannedAdapter

    return PlannedAdapter(name=name, id=0, weight=weight, role="content", triggers=(), score=1.0, similarity=1.0,
                          concept=concept)


def test_each_image_of_a_batch_gets_its_own_plan() -> None:
    from app.web.services import AdapterRow, picks_of
    from pipeline.image_plans import picks_per_image
    from retrieval.plan import ConceptPlan, ImagePlan, Plan

    a, b = _planned("a", 0.4), _planned("b", 0.4)
    images = (ImagePlan(0, "p", (a, b), ((True, True),)), ImagePlan(1, "p", (_planned("a", 0.8),), ((True, False),)),
              ImagePlan(2, "p", (), ((False, False),)), ImagePlan(3, "p", (), ((False, False),)))
    plan = Plan(prompt="p", final_prompt="p", base="toy", concepts=(ConceptPlan("p", None, (a, b)),), images=images)
    picks = picks_of([AdapterRow("A", 0.8, source="auto"), AdapterRow("b", 0.4, source="auto"), AdapterRow("m", 1.0)])
    per_image = picks_per_image(picks, plan, 4)
    # the table's edit (a doubled to 0.8) is kept as a factor on each image's own weight
    assert [[(p.name, p.weight) for p in image] for image in per_image] == [
        [("A", 0.8), ("b", 0.4), ("m", 1.0)], [("A", 1.6), ("m", 1.0)], [("m", 1.0)], [("m", 1.0)]]
    assert picks_per_image(picks, plan, 6) == [picks] * 6  # a plan made for another batch size: no masks


def test_auto_adapters_in_a_batch_follow_each_images_plan(server, client) -> None:  # type: ignore[no-untyped-def]
    prompt, batch = "a hartok heart shape", 6
    plan = server.services.plan(prompt, batch=batch)
    expected = [[adapter.name for adapter in image.adapters] for image in plan.images]
    assert len({tuple(names) for names in expected}) > 1, expected  # the masks differ between images
    gallery, provenance, final_prompt, _, _ = client.predict(prompt=prompt, seed=3, steps=1, batch=batch,
                                                          auto_adapters=True, api_name="/generate")
    assert [[a["alias"] for a in record["adapters"]] for record in provenance] == expected
    assert [record["seed"] for record in provenance] == list(range(3, 3 + batch))
    assert [[a["name"] for a in record["adapter_specs"]] for record in provenance] == expected
    for item, record, names in zip(gallery, provenance, expected, strict=True):
        caption = item["caption"] if isinstance(item, dict) else item[1]
        assert caption.startswith(f"seed {record['seed']} · ")
        assert all(name in caption for name in names) and (names or "no adapters" in caption)
    assert final_prompt.startswith("a hartok heart shape")
