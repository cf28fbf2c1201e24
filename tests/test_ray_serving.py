"""Medley on Ray Serve: a local Ray (2 CPUs, loopback), two replicas on the toy base, mixed adapter sets.

Skipped when Ray Serve is not installed (``pip install 'medley[serve]'``; ``.ci/run`` installs it).
"""

import concurrent.futures
import socket
import time
import urllib.request

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray Serve is optional: pip install 'medley[serve]'")
serve = pytest.importorskip("ray.serve")

from app.serving.ray_app import build  # noqa: E402
from app.serving.wire import adapter_set_id, images_from_json, request_from_json  # noqa: E402

SETS = [[], [{"name": "heart", "weight": 0.8}], [{"name": "diagonal", "weight": 0.8}],
        [{"name": "heart", "weight": 0.7}, {"name": "diagonal", "weight": 0.7}], [{"name": "ring", "weight": 1.0}],
        [{"name": "crescent", "weight": 0.8}, {"name": "pastel", "weight": 0.6}]]


def body(index: int) -> dict:
    return {"prompt": f"a red circle on a blue background {index}", "seed": 100 + index, "steps": 3,
            "picks": SETS[index % len(SETS)]}


def free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return int(handle.getsockname()[1])


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    home = tmp_path_factory.mktemp("ray-home")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="ERROR",
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}})
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    handle = serve.run(build({"home": str(home), "max_batch": 4, "batch_wait_s": 0.2}, replicas=2), name="medley",
                       route_prefix="/generate")
    yield handle, home, port
    serve.shutdown()
    ray.shutdown()


def call(handle, request: dict):
    return handle.options(method_name="render_json", multiplexed_model_id=adapter_set_id(request)).remote(request)


def test_twenty_concurrent_requests_over_six_sets_match_their_solo_runs(deployment, monkeypatch):
    handle, home, _ = deployment
    responses = [call(handle, body(i)) for i in range(20)]
    answers = [response.result(timeout_s=600) for response in responses]
    assert all("error" not in answer for answer in answers), [a.get("error") for a in answers]
    assert len({answer["replica"] for answer in answers}) == 2  # both replicas served
    monkeypatch.setenv("MEDLEY_HOME", str(home))
    from library.catalog import Catalog
    from pipeline import Studio, load_base

    studio = Studio(load_base(), Catalog())
    for index, answer in enumerate(answers):
        solo = studio.render(request_from_json(body(index)))
        (image,) = images_from_json(answer)
        # a replica batches requests with other adapter sets: one pixel level of float32 rounding at most
        assert np.abs(np.asarray(solo.images[0], dtype=int) - np.asarray(image, dtype=int)).max() <= 1, index
        assert [a["alias"] for a in answer["provenance"][0]["adapters"]] == [p["name"] for p in body(index)["picks"]]


def test_bad_requests_are_answered_with_their_error_and_http_works(deployment):
    handle, _, port = deployment
    unknown = call(handle, {"prompt": "a circle", "steps": 1, "picks": [{"name": "nosuch"}]}).result(timeout_s=300)
    assert "nosuch" in unknown["error"]
    assert "unknown request fields" in call(handle, {"prompt": "x", "colour": 1}).result(timeout_s=300)["error"]
    request = urllib.request.Request(f"http://127.0.0.1:{port}/generate", method="POST",
                                     data=b'{"prompt": "a red circle", "steps": 1}',
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as reply:
        import json

        assert len(json.loads(reply.read())["images"]) == 1


def test_a_killed_replica_is_restarted_and_no_request_hangs(deployment):
    handle, _, _ = deployment
    responses = [call(handle, body(i)) for i in range(6)]
    time.sleep(1.0)  # the requests are in the replicas' batchers now
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "MedleyReplica" in a["name"]]
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=False)
    answered, failed = 0, 0
    for response in responses:
        try:
            answer = response.result(timeout_s=600)  # a hang fails the test here
            answered += "images" in answer
        except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError, ray.exceptions.RayTaskError,
                concurrent.futures.TimeoutError) as error:
            assert not isinstance(error, concurrent.futures.TimeoutError)
            failed += 1
    assert answered + failed == 6
    deadline = time.monotonic() + 300
    while True:  # Serve brings the replica back; new requests are served
        try:
            assert "images" in call(handle, body(1)).result(timeout_s=300)
            break
        except ray.exceptions.RayActorError:
            assert time.monotonic() < deadline
            time.sleep(2)
