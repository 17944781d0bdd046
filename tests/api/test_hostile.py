"""Hostile and malformed input against a real service: every answer is a 4xx that names the problem, never a 500."""

import httpx
import pytest

from tests.api.conftest import TOKEN, follow, small_job

pytestmark = [pytest.mark.timeout(600)]

PROTECTED = [("get", "/v1/jobs"), ("get", "/v1/jobs/job-x"), ("post", "/v1/jobs/job-x/stop"),
             ("get", "/v1/jobs/job-x/logs"), ("get", "/v1/jobs/job-x/metrics"), ("get", "/v1/policies"),
             ("get", "/v1/policies/job-x"), ("post", "/v1/policies/job-x/act"), ("post", "/v1/jobs/validate"),
             ("get", "/metrics"), ("get", "/openapi.json"), ("get", "/docs"), ("get", "/redoc")]  # fmt: skip


def _raw(
    service, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"{}"
) -> httpx.Response:
    with httpx.Client(base_url=service.url, timeout=30) as c:
        req = c.build_request(method.upper(), path, content=body if method == "post" else None)
        req.headers = httpx.Headers(
            [(k, v) for k, v in req.headers.raw if k.lower() != b"authorization"] + headers
        )
        return c.send(req)


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_odd_authorization_headers_are_401_everywhere(service, method, path):
    good = f"Bearer {TOKEN}".encode()
    for headers, words in (
        ([(b"authorization", "Bearer tökén-ü".encode())], "wrong bearer token"),  # non-ASCII (UTF-8) bytes
        ([(b"authorization", b"Bearer \xff\xfe\x80")], "wrong bearer token"),  # not even UTF-8
        ([(b"authorization", good), (b"authorization", b"Bearer other")], "more than one Authorization"),
        ([(b"authorization", good), (b"authorization", good)], "more than one Authorization"),
        ([], "missing or wrong bearer token"),
    ):
        resp = _raw(service, method, path, headers)
        assert resp.status_code == 401, (path, headers, resp.text)
        assert resp.headers["www-authenticate"] == "Bearer" and words in resp.json()["detail"]


def test_docs_need_the_token_unless_made_public(service, extra_service):
    with service.client() as c:
        assert c.get("/openapi.json").status_code == 200 and c.get("/docs").status_code == 200
    public = extra_service(RAYAC_PUBLIC_DOCS="true")
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert httpx.get(public.url + path, timeout=30).status_code == 200
    assert httpx.get(public.url + "/v1/jobs", timeout=30).status_code == 401  # only the docs opened


def test_a_non_ascii_api_token_is_refused_at_start_up(capsys, monkeypatch):
    from rayac.cli import main

    monkeypatch.setenv("RAYAC_API_TOKEN", "tökén")
    assert main(["serve", "--port", "9"]) == 2
    assert "RAYAC_API_TOKEN: must be printable ASCII" in capsys.readouterr().err


def _post_raw(client: httpx.Client, path: str, body: str) -> httpx.Response:
    """``body`` is JSON text as a client sends it: escapes such as \\ud800 and NaN literals included."""
    return client.post(path, content=body.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('{"name": "x", "config": {"run": {"run_dir": "\\ud800"}}}', "config.run.run_dir: is not valid Unicode"),
        ('{"name": "\\udfff", "config": {}}', "name: "),
        ('{"config": {"env": {"kwargs": {"render_mode": "\\ud800"}}}}', "config.env.kwargs: render_mode: is not valid Unicode"),
        ('{"config": {"optim": {"lr": NaN}}}', "config.optim.lr: Input should be a finite number"),
        ('{"config": {"algo": {"ent_coef": Infinity}}}', "config.algo.ent_coef"),
        ('{"config": {"algo": {"vf_coef": 1e39}}}', "config.algo.vf_coef: 1e+39 is beyond the float32 range"),
        ('{"config": {"run": {"stop": {"target_return": -Infinity}}}}', "config.run.stop.target_return"),
        ('{"config": {"env": {"kwargs": {"x": [1, NaN]}}}}', "config.env.kwargs: x[1]: must be a finite number"),
        ('{"config": {"resources": {"learner_resources": {"gpu": -1}}}}',
         "config.resources.learner_resources.gpu: Input should be greater than or equal to 0"),
        ('{"config": {"env": {"kwargs": {"x": [' + ",".join(["0"] * 100_000) + "]}}}}", "at most 1000 values"),
    ],
)  # fmt: skip
def test_configs_that_cannot_be_stored_are_422(service, body, words):
    with service.client() as c:
        for path in ("/v1/jobs/validate", "/v1/jobs"):
            resp = _post_raw(c, path, body)
            assert resp.status_code == 422, (path, resp.text[:500])
            assert words in resp.json()["detail"], resp.json()["detail"][:500]
            assert {"field", "msg"} <= set(resp.json()["errors"][0])
        assert all(j["name"] != "x" for j in c.get("/v1/jobs", params={"limit": 200}).json()["jobs"])


def test_sse_last_event_id_zero_resumes_after_record_zero(service):
    with service.client() as c:
        job = c.post("/v1/jobs", json=small_job(steps=3000, run__stop={"total_env_steps": 3000})).json()
        events, final = follow(c, job["id"])
        assert final["status"] == "succeeded" and len(events) >= 3
        resumed, final = follow(c, job["id"], last_event_id=0)
        assert [i for i, _ in resumed] == [i for i, _ in events][1:]
        assert resumed == events[1:]


def test_job_list_is_paged_and_light(service):
    with service.client() as c:
        big = small_job(steps=500, run__stop={"total_env_steps": 500})
        big["config"]["env"]["kwargs"] = {}
        big["config"]["run"]["run_dir"] = None
        for _ in range(2):
            assert c.post("/v1/jobs", json=big).status_code == 201
        first = c.get("/v1/jobs", params={"limit": 1}).json()
        assert len(first["jobs"]) == 1 and first["next_cursor"]
        summary = first["jobs"][0]
        assert "config" not in summary and summary["algo"] == "a2c" and summary["env_id"] == "CartPole-v1"
        second = c.get("/v1/jobs", params={"limit": 1, "cursor": first["next_cursor"]}).json()
        assert (
            second["jobs"][0]["created_at"] <= summary["created_at"]
            and second["jobs"][0]["id"] != summary["id"]
        )
        bad = c.get("/v1/jobs", params={"cursor": "not-a-cursor"})
        assert bad.status_code == 422 and bad.json()["detail"].startswith("cursor: ")
        for limit in (0, 201):
            assert c.get("/v1/jobs", params={"limit": limit}).status_code == 422
        assert "config" in c.get(f"/v1/jobs/{summary['id']}").json()  # the whole config is on the job itself
