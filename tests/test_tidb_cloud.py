"""TiDB Cloud Serverless client (difymaint.dify.tidb_cloud) against the Digest-authenticating tidb_stub."""

from __future__ import annotations

import itertools
import logging
import random
import re
import socket
from collections.abc import Iterator
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from difymaint.core.errors import ConfigError, DifymaintError
from difymaint.core.exit_codes import ExitCode
from difymaint.core.settings import Settings, load_settings
from difymaint.dify.tidb_cloud import (
    ClusterNotFound,
    ClusterState,
    CreatedCluster,
    TidbAuthFailed,
    TidbCallGaveUp,
    TidbCloudClient,
    TidbCloudError,
    TidbCloudUnavailable,
    TidbCreateOutcomeUnknown,
    require_tidb_settings,
)
from difymaint.jobs import JOBS
from tests.conftest import NOW
from tests.stubs.tidb_cloud import Fault, TidbCloudStub, parse_digest
from tests.tidb_support import PROJECT, FakeClock

pytestmark = pytest.mark.usefixtures("no_tidb_env")
START = NOW  # the clock tests count from


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def tidb_settings(tidb_stub: TidbCloudStub, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "TIDB_API_URL": tidb_stub.url,
        "TIDB_PUBLIC_KEY": tidb_stub.state.public_key,
        "TIDB_PRIVATE_KEY": tidb_stub.state.private_key,
        "TIDB_PROJECT_ID": PROJECT,
    }
    values.update(overrides)
    return load_settings(overrides=values)


@pytest.fixture
def client(tidb_stub: TidbCloudStub, clock: FakeClock) -> Iterator[TidbCloudClient]:
    with TidbCloudClient.from_settings(tidb_settings(tidb_stub), clock=clock, rng=random.Random(7)) as made:
        yield made


def planted_client(tidb_stub: TidbCloudStub, clock: FakeClock, **overrides: Any) -> TidbCloudClient:
    """A client whose root passwords are recognisable: Plant3dSecret0001, Plant3dSecret0002, ..."""
    counter = itertools.count(1)
    return TidbCloudClient(
        require_tidb_settings(tidb_settings(tidb_stub, **overrides)),
        clock=clock,
        rng=random.Random(7),
        password_factory=lambda: f"Plant3dSecret{next(counter):04d}",
    )


# ------------------------------------------------------------------------------------------- digest auth


def test_digest_challenge_comes_first_then_requests_are_authenticated(
    tidb_stub: TidbCloudStub, client: TidbCloudClient
) -> None:
    created = client.batch_create(2)
    states = client.batch_get([c.cluster_id for c in created])

    first, *rest = tidb_stub.state.requests
    assert (first.status, first.authenticated) == (401, False)  # the challenge round trip
    assert [r.authenticated for r in rest] == [True, True]  # the challenge is reused (nonce count 2)
    assert {s.cluster_id for s in states} == {c.cluster_id for c in created}


def test_stub_challenge_is_rfc7616_md5_auth(tidb_stub: TidbCloudStub) -> None:
    response = httpx.get(f"{tidb_stub.url}/clusters/1")
    assert response.status_code == 401
    challenge = parse_digest(response.headers["WWW-Authenticate"])
    assert challenge is not None
    assert challenge["qop"] == "auth" and challenge["algorithm"] == "MD5"
    assert challenge["nonce"] and challenge["opaque"] and challenge["realm"]


def test_stub_rejects_a_replayed_digest_header(tidb_stub: TidbCloudStub) -> None:
    sent: list[str] = []

    def capture(request: httpx.Request) -> None:
        if "Authorization" in request.headers:
            sent.append(request.headers["Authorization"])

    auth = httpx.DigestAuth(tidb_stub.state.public_key, tidb_stub.state.private_key)
    with httpx.Client(auth=auth, event_hooks={"request": [capture]}) as http:
        assert http.get(f"{tidb_stub.url}/clusters:batchGet", params={"clusterIds": ["1"]}).status_code == 200
    replay = httpx.get(
        f"{tidb_stub.url}/clusters:batchGet", params={"clusterIds": ["1"]}, headers={"Authorization": sent[-1]}
    )
    assert replay.status_code == 401  # same nonce count again: refused


def test_wrong_private_key_fails_at_once_with_a_clear_error(tidb_stub: TidbCloudStub, clock: FakeClock) -> None:
    settings = tidb_settings(tidb_stub, TIDB_PRIVATE_KEY="not-the-private-key")
    with TidbCloudClient.from_settings(settings, clock=clock) as client, pytest.raises(TidbAuthFailed) as caught:
        client.batch_get(["1"])

    error = caught.value
    assert error.exit_code == ExitCode.USAGE
    assert "rejected the API key" in error.message and "HTTP 401" in error.message
    assert error.hint is not None and "TIDB_PRIVATE_KEY" in error.hint
    assert "not-the-private-key" not in f"{error} {error.hint} {error!r}"
    assert tidb_stub.api_requests() == []  # never authenticated
    assert len(tidb_stub.state.requests) == 2  # challenge + one wrong answer; no retries
    assert clock.slept == []


def test_wrong_public_key_fails_too(tidb_stub: TidbCloudStub, clock: FakeClock) -> None:
    settings = tidb_settings(tidb_stub, TIDB_PUBLIC_KEY="someone-else")
    with TidbCloudClient.from_settings(settings, clock=clock) as client, pytest.raises(TidbAuthFailed):
        client.get("1")


# ------------------------------------------------------------------------------------------- batchCreate


def test_batch_create_sends_difys_request_body_and_parses_ids(
    tidb_stub: TidbCloudStub, client: TidbCloudClient
) -> None:
    created = client.batch_create(3)

    assert len(created) == 3
    assert {c.cluster_id for c in created} == set(tidb_stub.state.clusters)
    (post,) = tidb_stub.api_requests("POST", "/clusters:batchCreate")
    sent = [item["cluster"] for item in post.body["requests"]]
    assert len(sent) == 3
    by_name = {c.display_name: c for c in created}
    for cluster in sent:
        assert re.fullmatch(r"[0-9a-f]{32}", cluster["displayName"])  # uuid4 hex, as Dify's batch create
        assert cluster["region"] == {"name": "regions/aws-us-east-1"}
        assert cluster["labels"] == {"tidb.cloud/project": PROJECT}
        assert cluster["spendingLimit"] == {"monthly": 100}
        assert cluster["rootPassword"] == by_name[cluster["displayName"]].password.get_secret_value()
    assert len({c["rootPassword"] for c in sent}) == 3  # one password per cluster
    for made in created:
        assert isinstance(made.password, SecretStr)
        assert made.state.state == "CREATING"
        assert made.account == "root"  # Dify's placeholder until the status job learns userPrefix
        assert made.qdrant_endpoint is None


def test_batch_create_uses_region_and_spend_limit_settings(tidb_stub: TidbCloudStub, clock: FakeClock) -> None:
    settings = tidb_settings(tidb_stub, TIDB_REGION="regions/gcp-us-central1", TIDB_SPEND_LIMIT=5)
    with TidbCloudClient.from_settings(settings, clock=clock) as client:
        client.batch_create(1)
    (post,) = tidb_stub.api_requests("POST")
    cluster = post.body["requests"][0]["cluster"]
    assert cluster["region"] == {"name": "regions/gcp-us-central1"}
    assert cluster["spendingLimit"] == {"monthly": 5}


def test_batch_create_caps_at_20_per_call(tidb_stub: TidbCloudStub, client: TidbCloudClient) -> None:
    for wrong in (0, 21, 500):
        with pytest.raises(ValueError, match="1 to 20"):
            client.batch_create(wrong)
    assert tidb_stub.state.requests == []

    created = client.batch_create(20)
    assert len(created) == 20
    assert len({c.cluster_id for c in created}) == 20
    assert len(tidb_stub.api_requests("POST")[0].body["requests"]) == 20


def test_batch_create_partial_answer_returns_what_was_created(
    tidb_stub: TidbCloudStub, client: TidbCloudClient, caplog: pytest.LogCaptureFixture
) -> None:
    tidb_stub.state.create_limit = 2
    with caplog.at_level(logging.INFO, logger="difymaint.tidb"):
        created = client.batch_create(5)
    assert len(created) == 2
    assert "created 2 of 5 clusters" in caplog.text
    for made in created:
        assert made.cluster_id in caplog.text  # every created id is logged before it is returned


def test_batch_create_retries_429_with_the_same_body(tidb_stub: TidbCloudStub, client: TidbCloudClient) -> None:
    tidb_stub.script(Fault(429, retry_after="2", method="POST"))
    created = client.batch_create(2)

    first, second = tidb_stub.api_requests("POST")
    assert (first.status, second.status) == (429, 200)
    assert first.body == second.body  # same names and passwords: nothing was created by the first
    assert len(created) == 2


@pytest.mark.parametrize("fault", [Fault(500, method="POST"), Fault(502, method="POST"), Fault(disconnect=True)])
def test_batch_create_is_not_retried_when_the_outcome_is_unknown(
    tidb_stub: TidbCloudStub, client: TidbCloudClient, clock: FakeClock, fault: Fault
) -> None:
    tidb_stub.script(fault)
    with pytest.raises(TidbCreateOutcomeUnknown) as caught:
        client.batch_create(3)

    assert len(tidb_stub.api_requests("POST")) == 1
    assert clock.slept == []
    sent = [item["cluster"]["displayName"] for item in tidb_stub.api_requests("POST")[0].body["requests"]]
    assert caught.value.display_names == tuple(sent)
    assert caught.value.exit_code == ExitCode.FAILED


def test_batch_create_connect_failure_is_retried_then_budgeted(clock: FakeClock) -> None:
    # Nothing listens on the port: the request provably never arrived, so retrying is safe.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = require_tidb_settings(
        load_settings(
            overrides={
                "TIDB_API_URL": f"http://127.0.0.1:{port}/v1beta1",
                "TIDB_PUBLIC_KEY": "k",
                "TIDB_PRIVATE_KEY": "s",
                "TIDB_PROJECT_ID": PROJECT,
            }
        )
    )
    with TidbCloudClient(config, clock=clock, max_requests=3) as client, pytest.raises(TidbCloudUnavailable):
        client.batch_create(1)
    assert client.requests_sent == 3


# --------------------------------------------------------------------------------------- batchGet and get


def test_batch_get_turns_clusters_active_after_n_polls(tidb_stub: TidbCloudStub, client: TidbCloudClient) -> None:
    tidb_stub.state.polls_until_active = 2
    ids = [c.cluster_id for c in client.batch_create(3)]

    assert {s.state for s in client.batch_get(ids)} == {"CREATING"}
    second = client.batch_get(ids)
    assert {s.state for s in second} == {"CREATING"}
    assert all(s.account is None and s.qdrant_endpoint is None and not s.is_active for s in second)
    third = {s.cluster_id: s for s in client.batch_get(ids)}

    assert set(third) == set(ids)
    for cluster_id, state in third.items():
        remote = tidb_stub.state.clusters[cluster_id]
        assert state.state == "ACTIVE" and state.is_active
        assert state.user_prefix == remote.user_prefix
        assert state.account == f"{remote.user_prefix}.root"
        assert state.qdrant_endpoint == f"https://qdrant-{remote.host}"
        assert state.create_time is not None
    query = tidb_stub.api_requests("GET", "/clusters:batchGet")[0].query
    assert query == {"clusterIds": ids, "view": ["BASIC"]}


def test_batch_get_can_stay_creating(tidb_stub: TidbCloudStub, client: TidbCloudClient) -> None:
    tidb_stub.state.polls_until_active = None
    ids = [c.cluster_id for c in client.batch_create(2)]
    for _ in range(5):
        assert {s.state for s in client.batch_get(ids)} == {"CREATING"}


def test_active_without_endpoint_in_basic_view_is_resolved_by_get(
    tidb_stub: TidbCloudStub, client: TidbCloudClient
) -> None:
    tidb_stub.state.polls_until_active = 0
    tidb_stub.state.basic_view_endpoints = False
    (made,) = client.batch_create(1)
    (state,) = client.batch_get([made.cluster_id])
    assert state.is_active and state.qdrant_endpoint is None  # Dify then falls back to GET /clusters/{id}

    full = client.get(made.cluster_id)
    assert full.qdrant_endpoint == f"https://qdrant-{tidb_stub.state.clusters[made.cluster_id].host}"
    assert full.account == state.account


def test_batch_get_limits_and_missing_ids(tidb_stub: TidbCloudStub, client: TidbCloudClient) -> None:
    assert client.batch_get([]) == []
    with pytest.raises(ValueError, match="at most 20"):
        client.batch_get([str(i) for i in range(21)])
    assert tidb_stub.state.requests == []

    ids = [c.cluster_id for c in client.batch_create(3)]
    tidb_stub.state.hidden = {ids[1]}
    found = client.batch_get([*ids, "404404"])
    assert [s.cluster_id for s in found] == [ids[0], ids[2]]


def test_get_and_delete(tidb_stub: TidbCloudStub, client: TidbCloudClient) -> None:
    (made,) = client.batch_create(1)
    assert client.get(made.cluster_id).display_name == made.display_name

    deleted = client.delete(made.cluster_id)
    assert deleted.state == "DELETING"
    with pytest.raises(ClusterNotFound) as caught:
        client.get(made.cluster_id)
    assert caught.value.cluster_id == made.cluster_id
    with pytest.raises(ClusterNotFound):
        client.delete(made.cluster_id)


def test_other_4xx_is_not_retried(tidb_stub: TidbCloudStub, client: TidbCloudClient, clock: FakeClock) -> None:
    tidb_stub.script(Fault(400, body={"code": 3, "message": "invalid view"}))
    with pytest.raises(TidbCloudError, match="HTTP 400: invalid view") as caught:
        client.batch_get(["1"])
    assert type(caught.value) is TidbCloudError
    assert len(tidb_stub.api_requests()) == 1 and clock.slept == []


def test_a_wrong_api_base_points_at_tidb_api_url(tidb_stub: TidbCloudStub, clock: FakeClock) -> None:
    settings = tidb_settings(tidb_stub, TIDB_API_URL=tidb_stub.url.removesuffix("/v1beta1"))
    with TidbCloudClient.from_settings(settings, clock=clock) as client, pytest.raises(TidbCloudError) as caught:
        client.batch_get(["1"])
    assert "HTTP 404" in caught.value.message
    assert caught.value.hint is not None and "TIDB_API_URL" in caught.value.hint


# ------------------------------------------------------------------------------------- retries and budget


def test_429_is_retried_after_retry_after(tidb_stub: TidbCloudStub, client: TidbCloudClient, clock: FakeClock) -> None:
    ids = [c.cluster_id for c in client.batch_create(1)]
    tidb_stub.script(Fault(429, retry_after="3"))

    assert [s.cluster_id for s in client.batch_get(ids)] == ids
    assert [r.status for r in tidb_stub.api_requests()] == [200, 429, 200]
    assert len(clock.slept) == 1 and clock.slept[0] >= 3


def test_retry_after_as_an_http_date(tidb_stub: TidbCloudStub, client: TidbCloudClient, clock: FakeClock) -> None:
    tidb_stub.script(Fault(429, retry_after=format_datetime(START + timedelta(seconds=7), usegmt=True)))
    client.batch_get(["1"])
    assert clock.slept == [pytest.approx(7.0)]


def test_5xx_and_network_errors_are_retried_with_growing_backoff(
    tidb_stub: TidbCloudStub, client: TidbCloudClient, clock: FakeClock
) -> None:
    (made,) = client.batch_create(1)
    tidb_stub.script(Fault(503), Fault(500), Fault(disconnect=True), Fault(504))

    assert client.get(made.cluster_id).cluster_id == made.cluster_id
    assert [r.status for r in tidb_stub.api_requests("GET")] == [503, 500, 0, 504, 200]
    assert len(clock.slept) == 4
    for attempt, slept in enumerate(clock.slept):  # base 0.5 s doubling, jittered into [50 %, 100 %]
        assert 0.25 * 2**attempt <= slept <= 0.5 * 2**attempt
    assert client.failed_requests == 4 and not client.budget_spent


def test_persistently_failing_api_stops_within_the_budget(
    tidb_stub: TidbCloudStub, client: TidbCloudClient, clock: FakeClock
) -> None:
    tidb_stub.state.fail_always = Fault(503)
    with pytest.raises(TidbCloudUnavailable) as caught:
        client.batch_get(["1", "2"])

    attempts = len(tidb_stub.api_requests())
    assert attempts <= 10
    assert clock.t <= 30.0
    error = caught.value
    assert isinstance(error, DifymaintError) and error.exit_code == ExitCode.FAILED
    assert "HTTP 503" in error.message and "failure budget" in error.message

    # The budget is per client (per run): later calls fail at once, without a request.
    with pytest.raises(TidbCloudUnavailable):
        client.get("1")
    with pytest.raises(TidbCloudUnavailable):
        client.batch_create(1)
    assert len(tidb_stub.api_requests()) == attempts
    assert client.budget_spent


def test_budget_knobs_come_from_settings(tidb_stub: TidbCloudStub, clock: FakeClock) -> None:
    tidb_stub.state.fail_always = Fault(500)
    settings = tidb_settings(tidb_stub, DIFYMAINT_TIDB_MAX_REQUESTS=3, DIFYMAINT_TIDB_MAX_SECONDS=600)
    with TidbCloudClient.from_settings(settings, clock=clock) as client, pytest.raises(TidbCloudUnavailable) as caught:
        client.batch_get(["1"])
    assert len(tidb_stub.api_requests()) == 3
    assert "3 failed requests in a row" in caught.value.message


def test_time_budget_ends_a_slow_retry_loop(tidb_stub: TidbCloudStub, clock: FakeClock) -> None:
    tidb_stub.state.fail_always = Fault(429, retry_after="4")
    settings = tidb_settings(tidb_stub, DIFYMAINT_TIDB_MAX_REQUESTS=100, DIFYMAINT_TIDB_MAX_SECONDS=10)
    with TidbCloudClient.from_settings(settings, clock=clock) as client, pytest.raises(TidbCloudUnavailable):
        client.batch_get(["1"])
    assert clock.t <= 10.0
    assert len(tidb_stub.api_requests()) == 3  # tries at 0, 4 and 8 s; the next would be due at 12 s


def test_retry_after_beyond_the_budget_gives_up_at_once(tidb_stub: TidbCloudStub, client: TidbCloudClient) -> None:
    tidb_stub.state.fail_always = Fault(429, retry_after="3600")
    with pytest.raises(TidbCloudUnavailable, match="asked to retry after 3600 s"):
        client.batch_get(["1"])
    assert len(tidb_stub.api_requests()) == 1


def test_a_success_resets_the_failure_streak(tidb_stub: TidbCloudStub, client: TidbCloudClient) -> None:
    for _ in range(4):  # 4 x 5 failures = 20 > 10, but never 10 in a row
        tidb_stub.script(*[Fault(500)] * 5)
        client.batch_get(["1"])
    assert client.failed_requests == 20 and not client.budget_spent


def call_bounded(tidb_stub: TidbCloudStub, clock: FakeClock) -> TidbCloudClient:
    settings = tidb_settings(tidb_stub)
    return TidbCloudClient(require_tidb_settings(settings), clock=clock, rng=random.Random(7), call_tries=3)


def test_a_call_that_keeps_failing_is_given_up_before_the_budget(tidb_stub: TidbCloudStub, clock: FakeClock) -> None:
    tidb_stub.state.polls_until_active = 0
    with call_bounded(tidb_stub, clock) as client:
        good, bad = (c.cluster_id for c in client.batch_create(2))
        tidb_stub.state.fail_matching.append(Fault(503, path_prefix="/clusters:batchGet", cluster_id=bad))
        for _ in range(3):  # three poison calls: 9 failed requests, under the budget's 10 in a row
            with pytest.raises(TidbCallGaveUp, match=r"HTTP 503.*set aside after 3 tries") as caught:
                client.batch_get([bad])
            assert caught.value.exit_code == 1 and not client.budget_spent
        assert [s.cluster_id for s in client.batch_get([good])] == [good]  # an answer ends the streak
        assert client.failed_requests == 9 and len(clock.slept) == 6  # no sleep after giving a call up
        for _ in range(3):
            with pytest.raises(TidbCallGaveUp):
                client.batch_get([bad])
        with pytest.raises(TidbCloudUnavailable, match="10 failed requests in a row"):
            client.batch_get([bad])  # an outage still ends within the run's budget


def test_429s_and_refused_connections_do_not_give_a_call_up(tidb_stub: TidbCloudStub, clock: FakeClock) -> None:
    tidb_stub.script(*[Fault(429)] * 5)  # the client's pace, not the request: retried within the budget
    with call_bounded(tidb_stub, clock) as client:
        assert client.batch_get(["1"]) == []
        assert client.failed_requests == 5


# ------------------------------------------------------------------------------------ secrets stay secret


def test_passwords_never_reach_logs_exceptions_or_reprs(
    tidb_stub: TidbCloudStub, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    client = planted_client(tidb_stub, clock)
    texts.append(repr(client))

    tidb_stub.script(Fault(429, retry_after="1", method="POST"))
    created = client.batch_create(3)  # retried once, succeeds
    texts += [repr(created), str(created), *(repr(c.password) for c in created)]

    tidb_stub.state.create_limit = 1
    texts.append(repr(client.batch_create(2)))  # partial answer
    tidb_stub.state.create_limit = None

    faults = [
        Fault(400, body={"code": 3, "message": "rootPassword Plant3dSecret0006 is too weak"}, method="POST"),
        Fault(500, body={"code": 13, "message": "failed for Plant3dSecret0008"}, method="POST"),
        Fault(disconnect=True, method="POST"),
    ]
    for fault in faults:
        tidb_stub.script(fault)
        with pytest.raises(TidbCloudError) as caught:
            client.batch_create(2)
        texts += [str(caught.value), repr(caught.value), caught.value.message, caught.value.hint or ""]
    client.close()

    sent = [item["cluster"]["rootPassword"] for r in tidb_stub.api_requests("POST") for item in r.body["requests"]]
    assert "Plant3dSecret0001" in sent and "Plant3dSecret0008" in sent  # the planted passwords were used
    assert created[0].password.get_secret_value().startswith("Plant3dSecret")
    haystack = "\n".join([caplog.text, *texts, *(r.getMessage() for r in caplog.records)])
    assert "Plant3dSecret" not in haystack
    assert tidb_stub.state.private_key not in haystack
    assert "Plant3dSecret" not in repr(created[0].state) and "Plant3dSecret" not in str(created[0])


def test_created_cluster_repr_hides_the_password() -> None:
    state = ClusterState("1", "n", "CREATING", "", None)
    made = CreatedCluster("1", "n", SecretStr("hunter2-hunter2"), state)
    assert "hunter2" not in repr(made) and "hunter2" not in str(made)


# --------------------------------------------------------------------------------------------- settings


def test_tidb_settings_defaults_match_dify() -> None:
    settings = load_settings()
    assert settings.TIDB_REGION == "regions/aws-us-east-1"
    assert settings.TIDB_SPEND_LIMIT == 100
    assert settings.TIDB_SERVERLESS_NUMBER == 500
    # Dify's switches default off (their defaults live with the jobs that read them, in the registry).
    switches = {switch.name: switch for name in ("create-tidb", "update-tidb-status") for switch in JOBS[name].switches}
    assert set(switches) == {
        "CREATE_TIDB_SERVICE_JOB_ENABLED",
        "ENABLE_CREATE_TIDB_SERVERLESS_TASK",
        "ENABLE_UPDATE_TIDB_SERVERLESS_STATUS_TASK",
    }
    assert not any(switch.on(settings) for switch in switches.values())
    assert settings.TIDB_API_URL is None and settings.TIDB_PRIVATE_KEY is None
    assert (settings.DIFYMAINT_TIDB_MAX_REQUESTS, settings.DIFYMAINT_TIDB_MAX_SECONDS) == (10, 30.0)


def test_private_key_is_a_secret_in_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDB_PRIVATE_KEY", "very-private-0042")
    settings = load_settings()
    assert isinstance(settings.TIDB_PRIVATE_KEY, SecretStr)
    assert "very-private-0042" not in repr(settings)


def test_missing_settings_raise_one_config_error_naming_them() -> None:
    with pytest.raises(ConfigError) as caught:
        require_tidb_settings(load_settings())
    error = caught.value
    assert error.exit_code == ExitCode.USAGE
    assert "\n" not in error.message
    for name in ("TIDB_API_URL", "TIDB_PUBLIC_KEY", "TIDB_PRIVATE_KEY", "TIDB_PROJECT_ID"):
        assert name in error.message
    assert "TIDB_REGION" not in error.message  # it has Dify's default


def test_one_missing_setting_is_named_alone(tidb_stub: TidbCloudStub) -> None:
    settings = tidb_settings(tidb_stub)
    settings.TIDB_PRIVATE_KEY = None
    with pytest.raises(ConfigError, match=r"^TiDB Cloud is not configured: TIDB_PRIVATE_KEY is not set$"):
        require_tidb_settings(settings)
    with pytest.raises(ConfigError, match="TIDB_PROJECT_ID"):
        TidbCloudClient.from_settings(tidb_settings(tidb_stub, TIDB_PROJECT_ID="  "))


def test_api_url_must_be_http(tidb_stub: TidbCloudStub) -> None:
    with pytest.raises(ConfigError, match="TIDB_API_URL"):
        require_tidb_settings(tidb_settings(tidb_stub, TIDB_API_URL="serverless.tidbapi.com/v1beta1"))
    config = require_tidb_settings(tidb_settings(tidb_stub, TIDB_API_URL=tidb_stub.url + "/"))
    assert config.api_url == tidb_stub.url
    assert "tidb_stub-private-key" not in repr(config)
