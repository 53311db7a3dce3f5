"""TiDB Cloud Serverless API client for the TiDB-on-Qdrant cluster pool (docs/tidb-pool.md).

Speaks the calls Dify's ``TidbService`` makes, with its request shapes: ``POST /clusters:batchCreate``
(``{"requests": [{"cluster": {...}}]}``, at most 20), ``GET /clusters:batchGet?clusterIds=…&view=BASIC``
(at most 20), ``GET /clusters/{id}`` and ``DELETE /clusters/{id}``, all with HTTP Digest authentication
(``TIDB_PUBLIC_KEY`` / ``TIDB_PRIVATE_KEY``). From a cluster's answer it derives what Dify stores in
``tidb_auth_bindings``: ``account = "{userPrefix}.root"`` and ``qdrant_endpoint =
"https://qdrant-{endpoints.public.host}"``.

Unlike Dify, every call is bounded. 429, 5xx and network errors are retried with jittered exponential
backoff (at least the server's ``Retry-After``), under one *failure budget* per client: after
``DIFYMAINT_TIDB_MAX_REQUESTS`` failed requests in a row, or once a failure streak has lasted
``DIFYMAINT_TIDB_MAX_SECONDS``, :class:`TidbCloudUnavailable` is raised, and every later call on the same
client raises it at once without a request. A persistently failing API therefore costs one run at most
10 requests and 30 s by default, however many chunks the job still had.

A client built with ``call_tries`` also bounds each call: one request that keeps failing (5xx, a timeout; not a
429 or a refused connection, which say nothing about the request) is given up after that many tries with
:class:`TidbCallGaveUp`, before it can spend the run's budget, so the caller can set it aside and go on with
its other requests. Its failures still count toward the budget's streak, which only an answer ends: an API
that fails every request still ends the run within the budget.

``batchCreate`` is not idempotent: an answer that may have come after the clusters were created (5xx, a
dropped connection, an unreadable body) is never retried, because a retry could create a second set that
no binding row would ever record. It raises :class:`TidbCreateOutcomeUnknown` carrying the display names
that were submitted, so the caller can log them and reconcile. Only a 429 and failures to connect, which
prove nothing reached the server, are retried.

Root passwords are generated here, kept as :class:`pydantic.SecretStr`, and never appear in a log line,
an exception message or a repr.
"""

from __future__ import annotations

import logging
import random
import secrets
import string
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from difymaint.core.clock import Clock, SystemClock
from difymaint.core.errors import ConfigError, DifymaintError
from difymaint.core.exit_codes import ExitCode
from difymaint.core.settings import TidbSettings

log = logging.getLogger("difymaint.tidb")

MAX_BATCH = 20  # Dify's hard-coded chunk for batchCreate and batchGet
ACTIVE = "ACTIVE"
CREATING = "CREATING"
PROJECT_LABEL = "tidb.cloud/project"
ROOT_ACCOUNT = "root"  # what Dify stores until the status job learns the userPrefix
PASSWORD_LENGTH = 24  # TiDB Cloud accepts 8-64 characters; Dify uses 16 hex digits
_PASSWORD_ALPHABET = string.ascii_letters + string.digits
_BODY_SNIPPET = 200


class TidbCloudError(DifymaintError):
    """TiDB Cloud answered a request with an error that retrying cannot fix."""

    reference = "tidb-cloud-error"

    def __init__(self, message: str, *, hint: str | None = None, status_code: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status_code = status_code


class TidbAuthFailed(TidbCloudError):
    """401/403: the API key is wrong or lacks access to the project. A configuration problem."""

    exit_code = ExitCode.USAGE
    reference = "tidb-auth-failed"


class ClusterNotFound(TidbCloudError):
    """404 for one cluster: deleted remotely (or never existed)."""

    reference = "tidb-cluster-not-found"

    def __init__(self, message: str, *, cluster_id: str) -> None:
        super().__init__(message, status_code=404)
        self.cluster_id = cluster_id


class TidbCloudUnavailable(TidbCloudError):
    """The failure budget is spent: TiDB Cloud kept failing (429, 5xx, network errors)."""

    reference = "tidb-cloud-unavailable"


class TidbCallGaveUp(TidbCloudError):
    """One request kept failing (``call_tries`` tries) while the budget lasts: set it aside, go on with others."""

    reference = "tidb-call-gave-up"


class TidbCreateOutcomeUnknown(TidbCloudError):
    """batchCreate failed in a way that may have created clusters anyway; it is not retried.

    ``display_names`` are the names submitted: clusters with these names in the project may exist without
    a binding row. Log them, then reconcile (list the project's clusters) or delete them.
    """

    reference = "tidb-create-outcome-unknown"

    def __init__(self, message: str, *, display_names: Sequence[str], status_code: int | None = None) -> None:
        super().__init__(
            message,
            status_code=status_code,
            hint="clusters may have been created without binding rows; the submitted display names are logged",
        )
        self.display_names = tuple(display_names)


@dataclass(frozen=True)
class TidbCloudConfig:
    """The TiDB settings a client cannot work without, checked by :func:`require_tidb_settings`."""

    api_url: str
    public_key: str
    private_key: SecretStr = field(repr=False)
    project_id: str
    region: str
    spend_limit: int


def require_tidb_settings(settings: TidbSettings) -> TidbCloudConfig:
    """The TiDB Cloud connection settings, or one ConfigError naming every missing variable."""

    def value(raw: str | None) -> str:
        return raw.strip() if raw else ""

    private_key = settings.TIDB_PRIVATE_KEY.get_secret_value() if settings.TIDB_PRIVATE_KEY else ""
    required = {
        "TIDB_API_URL": value(settings.TIDB_API_URL),
        "TIDB_PUBLIC_KEY": value(settings.TIDB_PUBLIC_KEY),
        "TIDB_PRIVATE_KEY": private_key.strip(),
        "TIDB_PROJECT_ID": value(settings.TIDB_PROJECT_ID),
        "TIDB_REGION": value(settings.TIDB_REGION),
    }
    missing = [name for name, given in required.items() if not given]
    if missing:
        raise ConfigError(
            f"TiDB Cloud is not configured: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set",
            hint="set them as for Dify's api service (TiDB-on-Qdrant vector store)",
        )
    api_url = required["TIDB_API_URL"]
    if not api_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"invalid setting TIDB_API_URL={api_url!r}: must be an http(s) URL",
            hint="e.g. TIDB_API_URL=https://serverless.tidbapi.com/v1beta1",
        )
    return TidbCloudConfig(
        api_url=api_url.rstrip("/"),
        public_key=required["TIDB_PUBLIC_KEY"],
        private_key=SecretStr(private_key),
        project_id=required["TIDB_PROJECT_ID"],
        region=required["TIDB_REGION"],
        spend_limit=settings.TIDB_SPEND_LIMIT,
    )


@dataclass(frozen=True)
class ClusterState:
    """One cluster as TiDB Cloud describes it, with the values Dify derives from it."""

    cluster_id: str
    display_name: str
    state: str  # CREATING, ACTIVE, DELETING, ... ("" when the answer had none)
    user_prefix: str  # "" until TiDB Cloud has assigned it
    public_host: str | None
    create_time: datetime | None = None

    @property
    def account(self) -> str | None:
        """Dify's SQL account for the cluster, ``{userPrefix}.root``; None while the prefix is unknown."""
        return f"{self.user_prefix}.root" if self.user_prefix else None

    @property
    def qdrant_endpoint(self) -> str | None:
        """Dify's TiDB-on-Qdrant endpoint, ``https://qdrant-{endpoints.public.host}``; None without a host."""
        return f"https://qdrant-{self.public_host}" if self.public_host else None

    @property
    def is_active(self) -> bool:
        """Dify's promotion test: state ACTIVE and a non-empty userPrefix."""
        return self.state == ACTIVE and bool(self.user_prefix)

    @classmethod
    def parse(cls, raw: Any) -> ClusterState | None:
        """Validate one cluster object; None when it has no usable clusterId."""
        if not isinstance(raw, dict):
            return None
        cluster_id = raw.get("clusterId")
        if not isinstance(cluster_id, str | int) or isinstance(cluster_id, bool) or not str(cluster_id):
            return None
        endpoints = raw.get("endpoints")
        public = endpoints.get("public") if isinstance(endpoints, dict) else None
        host = public.get("host") if isinstance(public, dict) else None
        return cls(
            cluster_id=str(cluster_id),
            display_name=_text(raw.get("displayName")),
            state=_text(raw.get("state")),
            user_prefix=_text(raw.get("userPrefix")),
            public_host=host if isinstance(host, str) and host else None,
            create_time=_timestamp(raw.get("createTime")),
        )


@dataclass(frozen=True)
class CreatedCluster:
    """A cluster batchCreate accepted, with the root password it was created with."""

    cluster_id: str
    display_name: str
    password: SecretStr = field(repr=False)
    state: ClusterState

    @property
    def account(self) -> str:
        """What Dify stores at creation: ``{userPrefix}.root`` if already known, else ``root``."""
        return self.state.account or ROOT_ACCOUNT

    @property
    def qdrant_endpoint(self) -> str | None:
        return self.state.qdrant_endpoint


def _text(raw: Any) -> str:
    return raw if isinstance(raw, str) else ""


def _timestamp(raw: Any) -> datetime | None:
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None


def _generate_password() -> str:
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


def _generate_display_name() -> str:
    return uuid.uuid4().hex  # Dify's batch create: 32 hex digits


@dataclass
class _Failure:
    """One failed request, as the retry loop sees it."""

    description: str
    retry_after: float | None = None
    status_code: int | None = None
    own: bool = True  # a failure of this request (5xx, timeout), not of the connection or the pace (429)


class TidbCloudClient:
    """TiDB Cloud Serverless API over httpx with Digest auth, explicit timeouts and a failure budget.

    One client per run: the failure budget is shared by all its calls, and once spent the client stays
    failed (every call raises :class:`TidbCloudUnavailable` without a request). Not thread-safe.
    """

    def __init__(
        self,
        config: TidbCloudConfig,
        *,
        timeout_s: float = 10.0,
        max_requests: int = 10,
        max_seconds: float = 30.0,
        call_tries: int | None = None,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 5.0,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        password_factory: Callable[[], str] = _generate_password,
        name_factory: Callable[[], str] = _generate_display_name,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if max_requests < 1 or max_seconds <= 0 or timeout_s <= 0 or (call_tries is not None and call_tries < 1):
            raise ValueError("timeout_s, max_requests, max_seconds and call_tries must be positive")
        self._config = config
        self._timeout_s = timeout_s
        self._max_requests = max_requests
        self._max_seconds = max_seconds
        self._call_tries = call_tries
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._password_factory = password_factory
        self._name_factory = name_factory
        self._http = httpx.Client(
            base_url=config.api_url,
            auth=httpx.DigestAuth(config.public_key, config.private_key.get_secret_value()),
            headers={"Accept": "application/json"},
            timeout=timeout_s,
            follow_redirects=False,  # a redirect would replay the Digest exchange against another host
            transport=transport,
        )
        self._streak = 0  # failed requests since the last answer that was not a failure
        self._streak_started: float | None = None
        self._spent: str | None = None  # the reason the failure budget ran out, once it has
        self.requests_sent = 0
        self.failed_requests = 0

    @classmethod
    def from_settings(
        cls,
        settings: TidbSettings,
        *,
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> TidbCloudClient:
        """A client configured from TIDB_* and DIFYMAINT_TIDB_*; ConfigError when settings are missing."""
        return cls(
            require_tidb_settings(settings),
            timeout_s=settings.DIFYMAINT_TIDB_TIMEOUT,
            max_requests=settings.DIFYMAINT_TIDB_MAX_REQUESTS,
            max_seconds=settings.DIFYMAINT_TIDB_MAX_SECONDS,
            clock=clock,
            rng=rng,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"TidbCloudClient(api_url={self._config.api_url!r}, project_id={self._config.project_id!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TidbCloudClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def budget_spent(self) -> bool:
        """True once the failure budget ran out; every later call raises TidbCloudUnavailable."""
        return self._spent is not None

    # ----------------------------------------------------------------------------------------------- calls

    def batch_create(self, n: int) -> list[CreatedCluster]:
        """Create ``n`` (1..20) clusters in one ``POST /clusters:batchCreate``, as Dify's pool filler does.

        Each gets a fresh display name (32 hex digits) and root password, region ``TIDB_REGION``, label
        ``tidb.cloud/project = TIDB_PROJECT_ID`` and a monthly spending limit of ``TIDB_SPEND_LIMIT``. Returns
        the clusters the answer lists (possibly fewer than asked for), each with its password; every created
        cluster id is logged before this returns. Raises TidbCreateOutcomeUnknown when the outcome is unknown.
        """
        if not 1 <= n <= MAX_BATCH:
            raise ValueError(f"batch_create takes 1 to {MAX_BATCH} clusters per call, not {n}")
        passwords: dict[str, SecretStr] = {}
        requests = []
        for _ in range(n):
            name = self._name_factory()
            if name in passwords:
                raise ValueError(f"display name {name!r} generated twice")
            passwords[name] = SecretStr(self._password_factory())
            cluster: dict[str, Any] = {
                "displayName": name,
                "region": {"name": self._config.region},
                "labels": {PROJECT_LABEL: self._config.project_id},
                "spendingLimit": {"monthly": self._config.spend_limit},
                "rootPassword": passwords[name].get_secret_value(),
            }
            requests.append({"cluster": cluster})
        names = list(passwords)
        log.debug("TiDB Cloud batchCreate: submitting %d clusters: %s", n, ", ".join(names))
        secrets_in_flight = [secret.get_secret_value() for secret in passwords.values()]
        response = self._request(
            "POST", "/clusters:batchCreate", json={"requests": requests}, create_names=names, scrub=secrets_in_flight
        )
        body = self._json(response, create_names=names, scrub=secrets_in_flight)
        items = body.get("clusters")
        if not isinstance(items, list):
            self._create_unknown(names, "answered 200 without a clusters list", status_code=200)
        created: list[CreatedCluster] = []
        for item in items:
            state = ClusterState.parse(item)
            if state is None:
                shown = _text(item.get("displayName")) if isinstance(item, dict) else ""
                log.error("TiDB Cloud batchCreate listed a cluster without a clusterId (displayName %r)", shown)
                continue
            password = passwords.pop(state.display_name, None)
            if password is None:
                # Dify skips these too (no cached password): the cluster exists but cannot be used.
                log.error(
                    "TiDB Cloud batchCreate returned cluster %s with unknown display name %r; not recorded",
                    state.cluster_id,
                    state.display_name,
                )
                continue
            log.info("TiDB Cloud created cluster %s (%s), state %s", state.cluster_id, state.display_name, state.state)
            created.append(CreatedCluster(state.cluster_id, state.display_name, password, state))
        if passwords:
            log.warning(
                "TiDB Cloud batchCreate created %d of %d clusters; not in the answer: %s",
                len(created),
                n,
                ", ".join(passwords),
            )
        return created

    def batch_get(self, cluster_ids: Sequence[str], *, view: str = "BASIC") -> list[ClusterState]:
        """``GET /clusters:batchGet`` for 1..20 ids (Dify asks for the BASIC view). Unknown ids are absent."""
        ids = [str(cluster_id) for cluster_id in cluster_ids]
        if not ids:
            return []
        if len(ids) > MAX_BATCH:
            raise ValueError(f"batch_get takes at most {MAX_BATCH} cluster ids per call, not {len(ids)}")
        response = self._request("GET", "/clusters:batchGet", params={"clusterIds": ids, "view": view})
        items = self._json(response).get("clusters")
        if not isinstance(items, list):
            raise TidbCloudError("TiDB Cloud GET /clusters:batchGet answered without a clusters list")
        states = [state for state in (ClusterState.parse(item) for item in items) if state is not None]
        if len(states) < len(ids):
            found = {state.cluster_id for state in states}
            log.debug("TiDB Cloud batchGet did not list: %s", ", ".join(i for i in ids if i not in found))
        return states

    def get(self, cluster_id: str) -> ClusterState:
        """``GET /clusters/{id}``; raises ClusterNotFound when TiDB Cloud does not know the cluster."""
        return self._one("GET", cluster_id)

    def delete(self, cluster_id: str) -> ClusterState:
        """``DELETE /clusters/{id}``; returns the cluster as answered (usually DELETING). ClusterNotFound on 404."""
        return self._one("DELETE", cluster_id)

    def _one(self, method: str, cluster_id: str) -> ClusterState:
        cluster_id = str(cluster_id)
        if not cluster_id:
            raise ValueError("cluster_id must not be empty")
        path = f"/clusters/{quote(cluster_id, safe='')}"
        response = self._request(method, path, cluster_id=cluster_id)
        state = ClusterState.parse(self._json(response))
        if state is None:
            raise TidbCloudError(f"TiDB Cloud {method} /clusters/{{id}} answered without a clusterId")
        return state

    # ------------------------------------------------------------------------------------------- transport

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        cluster_id: str | None = None,
        create_names: Sequence[str] | None = None,
        scrub: Sequence[str] = (),
    ) -> httpx.Response:
        """Send with retries under the failure budget; return a 2xx response or raise."""
        what = f"{method} {path}"
        tries = 0  # failures of this call that point at the request itself (see call_tries)
        while True:
            if self._spent is not None:
                raise TidbCloudUnavailable(self._spent, hint=_BUDGET_HINT)
            started = self._clock.monotonic()
            timeout = self._timeout_s
            if self._streak_started is not None:
                timeout = max(0.001, min(timeout, self._max_seconds - (started - self._streak_started)))
            self.requests_sent += 1
            try:
                response = self._http.request(method, path, params=params, json=json, timeout=timeout)
            except httpx.TransportError as exc:
                unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
                if create_names is not None and not unsent:
                    self._create_unknown(create_names, f"failed mid-request ({type(exc).__name__})")
                failure = _Failure(
                    f"{type(exc).__name__}: {_scrub(str(exc), scrub).rstrip('.') or 'no detail'}", own=not unsent
                )
            else:
                status = response.status_code
                if 200 <= status < 300:
                    self._end_streak()
                    return response
                retryable = status == 429 or status >= 500
                if create_names is not None and status >= 500:
                    self._create_unknown(create_names, f"answered HTTP {status}", status_code=status)
                if not retryable:
                    self._end_streak()
                    raise self._status_error(what, response, cluster_id=cluster_id, scrub=scrub)
                failure = _Failure(
                    f"HTTP {status}{_detail(response, scrub)}",
                    retry_after=self._retry_after(response),
                    status_code=status,
                    own=status != 429,  # a 429 is about the client's pace, not this request
                )
            if failure.own:
                tries += 1
            self._fail(what, failure, started, tries)

    def _fail(self, what: str, failure: _Failure, started: float, tries: int) -> None:
        """Count one failed request; sleep before the next try, or give the call up, or spend the budget."""
        self.failed_requests += 1
        self._streak += 1
        if self._streak_started is None:
            self._streak_started = started
        elapsed = self._clock.monotonic() - self._streak_started
        delay = min(self._backoff_max_s, self._backoff_base_s * 2 ** (self._streak - 1))
        delay *= self._rng.uniform(0.5, 1.0)
        if failure.retry_after is not None:
            delay = max(delay, failure.retry_after)
        reason = None
        if self._streak >= self._max_requests:
            reason = f"{self._streak} failed requests in a row"
        elif elapsed + delay >= self._max_seconds:
            if failure.retry_after is not None:
                reason = f"failing for {elapsed:.1f} s and asked to retry after {failure.retry_after:g} s"
            else:
                reason = f"failing for {elapsed:.1f} s and the next try is due in {delay:.1f} s"
        if reason is not None:
            self._spent = (
                f"TiDB Cloud unavailable: {what} gave {failure.description}; "
                f"{reason}, failure budget of {self._max_requests} requests / {self._max_seconds:g} s spent"
            )
            raise TidbCloudUnavailable(self._spent, hint=_BUDGET_HINT)
        if self._call_tries is not None and tries >= self._call_tries:
            # No sleep: the caller goes on with another request, which the streak's backoff still paces.
            raise TidbCallGaveUp(
                f"TiDB Cloud {what} gave {failure.description}; set aside after {tries} tries",
                status_code=failure.status_code,
            )
        log.warning(
            "TiDB Cloud %s gave %s; retry %d of at most %d in %.1f s",
            what,
            failure.description,
            self._streak,
            self._max_requests - 1,
            delay,
        )
        self._clock.sleep(delay)

    def _end_streak(self) -> None:
        self._streak = 0
        self._streak_started = None

    def _retry_after(self, response: httpx.Response) -> float | None:
        """Retry-After as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
        raw = response.headers.get("Retry-After")
        if not raw:
            return None
        raw = raw.strip()
        if raw.isdigit():
            return float(raw)
        try:
            moment = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            return None
        return max(0.0, (moment - self._clock.now()).total_seconds())

    def _status_error(
        self, what: str, response: httpx.Response, *, cluster_id: str | None, scrub: Sequence[str]
    ) -> TidbCloudError:
        status = response.status_code
        detail = _detail(response, scrub)
        if status in (401, 403):
            return TidbAuthFailed(
                f"TiDB Cloud rejected the API key: {what} answered HTTP {status}{detail}",
                hint="check TIDB_PUBLIC_KEY / TIDB_PRIVATE_KEY and that the key may manage TIDB_PROJECT_ID",
                status_code=status,
            )
        if status == 404 and cluster_id is not None:
            return ClusterNotFound(f"TiDB Cloud has no cluster {cluster_id} ({what}: HTTP 404)", cluster_id=cluster_id)
        hint = "check TIDB_API_URL (the Serverless API base, ending in /v1beta1)" if status == 404 else None
        return TidbCloudError(f"TiDB Cloud {what} answered HTTP {status}{detail}", hint=hint, status_code=status)

    def _json(
        self, response: httpx.Response, *, create_names: Sequence[str] | None = None, scrub: Sequence[str] = ()
    ) -> dict[str, Any]:
        what = f"{response.request.method} {response.request.url.path}"
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            return body
        if create_names is not None:
            self._create_unknown(create_names, "answered with a body that is not a JSON object", status_code=200)
        raise TidbCloudError(f"TiDB Cloud {what} answered with a body that is not a JSON object")

    def _create_unknown(self, names: Sequence[str], why: str, *, status_code: int | None = None) -> NoReturn:
        message = f"TiDB Cloud POST /clusters:batchCreate {why}; {len(names)} clusters may exist unrecorded"
        log.error("%s; submitted display names: %s", message, ", ".join(names))
        raise TidbCreateOutcomeUnknown(message, display_names=names, status_code=status_code)


_BUDGET_HINT = "the next scheduled run tries again (budget: DIFYMAINT_TIDB_MAX_REQUESTS, DIFYMAINT_TIDB_MAX_SECONDS)"


def _scrub(text: str, secrets_: Sequence[str]) -> str:
    for secret in secrets_:
        if secret:
            text = text.replace(secret, "***")
    return text


def _detail(response: httpx.Response, scrub: Sequence[str]) -> str:
    """A short, password-free excerpt of an error answer: TiDB Cloud's ``message`` field, or the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        text = body["message"]
    else:
        text = response.text
    text = " ".join(_scrub(text, scrub).split())
    if len(text) > _BODY_SNIPPET:
        text = text[: _BODY_SNIPPET - 1] + "…"
    return f": {text}" if text else ""
