"""Publishing to Dify's workers through Celery's own client, and reading Dify's broker.

Some work can only be done by Dify's own workers (they hold the vector-store drivers, the workflow engine,
the plugin daemon client). difymaint hands it over the way ``task.delay(...)`` inside Dify would: a
``Celery`` app configured like Dify's ``extensions/ext_celery.py`` calls ``send_task`` with Dify's task
name, queue and argument shape. Celery and kombu build the envelope, so the message is whatever the
installed Celery sends and cannot drift from it.

Configured like Dify (docs/dify-reference.md#celery):

* ``broker_url = CELERY_BROKER_URL`` — ``redis://``, ``rediss://`` (TLS from ``REDIS_SSL_*``),
  ``sentinel://host:port[/db][;sentinel://…]`` with ``CELERY_USE_SENTINEL`` (master name, sentinel password
  and socket timeout in ``sentinel_kwargs``, as Dify sets them) or ``amqp://``;
* a non-empty ``REDIS_KEY_PREFIX`` becomes kombu's ``global_keyprefix = "<prefix>:"``, so every broker key
  (queue lists, ``unacked``, bindings) carries it;
* results are ignored (``task_ignore_result``), as in Dify.

Celery is imported inside the functions that need it, so commands that never publish (and ``--help``) do
not pay for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from difymaint.core.errors import ConfigError, DifymaintError
from difymaint.core.redact import scrub
from difymaint.core.settings import Settings

# kombu's Redis transport: a queue is a LIST named after it; priorities 3/6/9 live in sibling lists.
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)
UNACKED_KEY = "unacked"

# The queues Dify's docker entrypoint.sh has a worker consume (both editions; `--all-queues`). The queue
# monitor's own `monitor` queue is not among them.
DIFY_WORKER_QUEUES: tuple[str, ...] = (
    "api_token",
    "dataset",
    "dataset_summary",
    "priority_dataset",
    "priority_pipeline",
    "pipeline",
    "mail",
    "ops_trace",
    "app_deletion",
    "plugin",
    "workflow_storage",
    "conversation",
    "workflow",
    "schedule_poller",
    "schedule_executor",
    "triggered_workflow_dispatcher",
    "trigger_refresh_publisher",
    "trigger_refresh_executor",
    "retention",
    "workflow_based_app_execution",
)

_SCHEMES = ("redis", "rediss", "sentinel", "amqp", "amqps", "pyamqp")


class BrokerUnavailable(DifymaintError):
    """The Celery broker could not take the messages (nothing more was handed to Dify's workers)."""

    reference = "broker-unreachable"

    def __init__(self, message: str, *, hint: str | None = None, published: Sequence[str] = ()) -> None:
        super().__init__(message, hint=hint)
        # Task ids that did reach the broker before it failed (a caller may need to record them).
        self.published = list(published)


@dataclass(frozen=True)
class TaskCall:
    """One message: positional args, keyword args, and an optional delay (Celery's ``countdown``)."""

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None
    countdown: float | None = None


@dataclass(frozen=True)
class DifyTask:
    """A task Dify's workers run: its Celery name, its queue and its parameters (checked before sending)."""

    name: str
    queue: str
    args: tuple[str, ...] = ()  # positional parameters, in order
    kwargs: tuple[str, ...] = ()  # keyword parameters

    def call(self, *args: Any, countdown: float | None = None, **kwargs: Any) -> TaskCall:
        if len(args) != len(self.args) or set(kwargs) != set(self.kwargs):
            raise ValueError(
                f"{self.name} takes args {self.args} and kwargs {self.kwargs}, got {len(args)} args "
                f"and kwargs {sorted(kwargs)}"
            )
        return TaskCall(tuple(args), dict(kwargs) or None, countdown)


def _task(name: str, queue: str, args: tuple[str, ...] = (), kwargs: tuple[str, ...] = ()) -> DifyTask:
    return DifyTask(name, queue, args, kwargs)


# Every task Dify's beat jobs hand to Dify's workers, with the shape the beat job uses when it calls it
# (docs/dify-reference.md#celery; checked against Dify's api/tasks/*.py and api/schedule/*.py).
DIFY_TASKS: dict[str, DifyTask] = {
    t.name: t
    for t in (
        # clean_unused_datasets_task: deal_dataset_vector_index_task.delay(dataset_id, "remove")
        _task(
            "tasks.deal_dataset_vector_index_task.deal_dataset_vector_index_task",
            "dataset",
            ("dataset_id", "action"),
        ),
        # check_upgradable_plugin_task: .delay(tenant_id, strategy_setting, upgrade_time_of_day, upgrade_mode,
        # exclude_plugins, include_plugins)
        _task(
            "tasks.process_tenant_plugin_autoupgrade_check_task.process_tenant_plugin_autoupgrade_check_task",
            "plugin",
            (
                "tenant_id",
                "strategy_setting",
                "upgrade_time_of_day",
                "upgrade_mode",
                "exclude_plugins",
                "include_plugins",
            ),
        ),
        # poll_workflow_schedules: group(run_schedule_trigger.s(schedule_id) ...)
        _task("tasks.workflow_schedule_tasks.run_schedule_trigger", "schedule_executor", ("schedule_id",)),
        # trigger_provider_refresh: trigger_subscription_refresh.s(tenant_id=..., subscription_id=...)
        _task(
            "tasks.trigger_subscription_refresh_tasks.trigger_subscription_refresh",
            "trigger_refresh_executor",
            kwargs=("tenant_id", "subscription_id"),
        ),
        # human_input_form_timeout (node timeout): resume_app_execution.apply_async(kwargs={"payload": {...}})
        _task("resume_app_execution", "workflow_based_app_execution", kwargs=("payload",)),
    )
}
INDEX_TASK = "tasks.deal_dataset_vector_index_task.deal_dataset_vector_index_task"


def mask_url(url: str) -> str:
    """The broker URL(s) with any password replaced by ``**`` (kombu's own sanitiser, per ``;`` part)."""
    from kombu.utils.url import sanitize_url

    return ";".join(sanitize_url(part) for part in url.split(";"))


def _scrub(text: str, settings: Settings) -> str:
    """Remove the broker and sentinel passwords from an error text a driver may have built from the URL."""
    secrets = [urlsplit(part).password for part in (settings.CELERY_BROKER_URL or "").split(";")]
    if settings.CELERY_SENTINEL_PASSWORD is not None:
        secrets.append(settings.CELERY_SENTINEL_PASSWORD.get_secret_value())
    # The shared rule (core/redact.py): a short password is masked where it stands in a URL, never in words.
    return scrub(text, [secret for secret in secrets if secret])


def broker_url(settings: Settings) -> str:
    """``CELERY_BROKER_URL``, checked against the schemes difymaint can publish to."""
    url = settings.CELERY_BROKER_URL
    if not url:
        raise ConfigError(
            "CELERY_BROKER_URL is not set",
            hint="use Dify's value (docker: redis://:difyai123456@redis:6379/1)",
        )
    scheme = urlsplit(url.split(";")[0]).scheme
    if scheme not in _SCHEMES:
        raise ConfigError(
            f"CELERY_BROKER_URL scheme {scheme!r} is not supported",
            hint="use redis://, rediss://, sentinel:// (with CELERY_USE_SENTINEL) or amqp://",
        )
    if scheme == "sentinel" and not settings.CELERY_USE_SENTINEL:
        raise ConfigError(
            "CELERY_BROKER_URL is a sentinel:// URL but CELERY_USE_SENTINEL is off",
            hint="set CELERY_USE_SENTINEL=true and CELERY_SENTINEL_MASTER_NAME, as for Dify",
        )
    if settings.CELERY_USE_SENTINEL and scheme != "sentinel":
        raise ConfigError(
            "CELERY_USE_SENTINEL is on but CELERY_BROKER_URL is not a sentinel:// URL",
            hint="Dify's format: sentinel://:<redis password>@<sentinel host>:<port>/<db>[;sentinel://…]",
        )
    if settings.CELERY_USE_SENTINEL and not settings.CELERY_SENTINEL_MASTER_NAME:
        raise ConfigError("CELERY_USE_SENTINEL is on but CELERY_SENTINEL_MASTER_NAME is not set")
    return url


def key_prefix(settings: Settings) -> str:
    """kombu's ``global_keyprefix`` as Dify sets it: ``"<REDIS_KEY_PREFIX>:"`` or nothing."""
    prefix = settings.REDIS_KEY_PREFIX.strip()
    return f"{prefix}:" if prefix else ""


def transport_options(settings: Settings) -> dict[str, Any]:
    """``broker_transport_options`` as Dify builds them, plus socket timeouts so a cron run cannot hang."""
    options: dict[str, Any] = {}
    scheme = urlsplit((settings.CELERY_BROKER_URL or "").split(";")[0]).scheme
    if scheme in ("redis", "rediss", "sentinel"):
        options["socket_timeout"] = settings.REDIS_SOCKET_TIMEOUT
        options["socket_connect_timeout"] = settings.REDIS_SOCKET_CONNECT_TIMEOUT
        if key_prefix(settings):
            options["global_keyprefix"] = key_prefix(settings)
    if settings.CELERY_USE_SENTINEL:
        password = settings.CELERY_SENTINEL_PASSWORD
        options["master_name"] = settings.CELERY_SENTINEL_MASTER_NAME
        options["sentinel_kwargs"] = {
            "socket_timeout": settings.CELERY_SENTINEL_SOCKET_TIMEOUT,
            "password": password.get_secret_value() if password is not None else None,
        }
    return options


def _ssl_options(settings: Settings) -> dict[str, Any] | None:
    """Dify's ``broker_use_ssl``: only for ``rediss://`` brokers, from the ``REDIS_SSL_*`` settings."""
    if not (settings.CELERY_BROKER_URL or "").startswith("rediss://"):
        return None
    import ssl

    reqs = {"CERT_NONE": ssl.CERT_NONE, "CERT_OPTIONAL": ssl.CERT_OPTIONAL, "CERT_REQUIRED": ssl.CERT_REQUIRED}
    return {
        "ssl_cert_reqs": reqs.get(settings.REDIS_SSL_CERT_REQS, ssl.CERT_NONE),
        "ssl_ca_certs": settings.REDIS_SSL_CA_CERTS,
        "ssl_certfile": settings.REDIS_SSL_CERTFILE,
        "ssl_keyfile": settings.REDIS_SSL_KEYFILE,
    }


def celery_app(settings: Settings) -> Any:
    """A ``celery.Celery`` app pointed at Dify's broker the way Dify's own app is."""
    url = broker_url(settings)
    from celery import Celery

    app = Celery("difymaint", broker=url, set_as_current=False)
    app.conf.update(
        broker_transport_options=transport_options(settings),
        broker_connection_timeout=settings.REDIS_SOCKET_CONNECT_TIMEOUT,
        broker_connection_retry_on_startup=False,
        task_ignore_result=True,
        result_backend=None,
    )
    ssl_options = _ssl_options(settings)
    if ssl_options:
        app.conf.update(broker_use_ssl=ssl_options)
    return app


def _connection_errors(connection: Any) -> tuple[type[BaseException], ...]:
    from kombu.exceptions import OperationalError

    return (OperationalError, OSError, *connection.connection_errors, *connection.channel_errors)


def _unreachable(settings: Settings, exc: BaseException, what: str) -> BrokerUnavailable:
    shown = mask_url(settings.CELERY_BROKER_URL or "")
    reason = _scrub(str(exc) or type(exc).__name__, settings)
    return BrokerUnavailable(f"{what} at {shown}: {reason}", hint="check CELERY_BROKER_URL")


class CeleryPublisher:
    """Sends Dify task messages with ``Celery.send_task``; counts what reached the broker in ``sent``."""

    def __init__(self, app: Any, connection: Any, settings: Settings) -> None:
        self.app = app
        self.connection = connection
        self.settings = settings
        self.sent = 0

    def send(self, task: str, calls: Sequence[TaskCall], *, queue: str) -> list[str]:
        """Publish one message per call to ``queue``; returns the task ids. Raises BrokerUnavailable."""
        ids: list[str] = []
        if not calls:
            return ids
        errors = _connection_errors(self.connection)
        try:
            with self.app.producer_or_acquire() as producer:
                for call in calls:
                    result = self.app.send_task(
                        task,
                        args=list(call.args),
                        kwargs=dict(call.kwargs or {}),
                        queue=queue,
                        countdown=call.countdown,
                        producer=producer,
                        # A short, bounded retry: a cron run reports a dead broker instead of waiting on it.
                        retry=True,
                        retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2},
                    )
                    ids.append(str(result.id))
                    self.sent += 1
        except errors as exc:
            failure = _unreachable(
                self.settings, exc, f"cannot publish {len(calls) - len(ids)} {task} message(s) to the Celery broker"
            )
            failure.published = ids
            raise failure from None
        return ids

    def send_to(self, task: DifyTask, calls: Sequence[TaskCall]) -> list[str]:
        """Publish to the task's own queue."""
        return self.send(task.name, calls, queue=task.queue)

    def close(self) -> None:
        self.connection.release()
        self.app.close()


def publisher(settings: Settings) -> CeleryPublisher:
    """A publisher for Dify's broker, connected first so a bad URL or a dead broker fails before any work."""
    app = celery_app(settings)
    connection = app.connection_for_write()
    try:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=None)
        # kombu connects lazily per channel; opening the default channel makes Redis answer now.
        connection.default_channel  # noqa: B018
    except _connection_errors(connection) as exc:
        connection.release()
        raise _unreachable(settings, exc, "cannot reach the Celery broker") from None
    return CeleryPublisher(app, connection, settings)


class LazyPublisher:
    """A publisher connected on first use and closed once: a tick with nothing to publish never touches the
    broker (nor imports Celery), and a broker that is down fails at the first message, inside its batch."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._publisher: CeleryPublisher | None = None

    def get(self) -> CeleryPublisher:
        if self._publisher is None:
            self._publisher = publisher(self._settings)
        return self._publisher

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None


@contextmanager
def broker_redis(settings: Settings) -> Iterator[tuple[Any, str]]:
    """A plain redis-py client on Dify's broker and the ``global_keyprefix`` its keys carry.

    The connection comes from kombu (so the DB default, TLS and Sentinel master resolution are kombu's own);
    the client is a plain ``redis.Redis`` on kombu's pool, so every key is named explicitly with the prefix
    (kombu's own client prefixes some commands only). Redis brokers only: ``amqp://`` is a ConfigError.
    """
    url = broker_url(settings)
    if urlsplit(url.split(";")[0]).scheme not in ("redis", "rediss", "sentinel"):
        raise ConfigError(
            "reading queue lengths needs a Redis broker (redis://, rediss:// or sentinel://)",
            hint="for RabbitMQ read the queue depths from its management API",
        )
    import redis

    app = celery_app(settings)
    connection = app.connection_for_read()
    try:
        try:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=None)
            channel = connection.default_channel
            client = redis.Redis(connection_pool=channel.client.connection_pool)
            client.ping()
        except _connection_errors(connection) as exc:
            raise _unreachable(settings, exc, "cannot reach the Celery broker") from None
        yield client, key_prefix(settings)
    finally:
        connection.release()
        app.close()


def queue_keys(queue: str) -> list[str]:
    """The Redis lists holding ``queue``'s waiting messages (without the global prefix): bare + priorities."""
    return [queue, *(f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS)]


def queue_consumers(settings: Settings, timeout_s: float) -> tuple[dict[str, list[str]], list[str]]:
    """Which workers consume which queue, by Celery's own broadcast (``inspect().active_queues()``, what
    ``celery inspect active_queues`` prints): ``(queue → worker names, every worker that answered)``.

    A worker answers only while its remote control is on (Celery's default) and its event loop is free within
    ``timeout_s``; a queue nobody answered for has no consumer that can be seen.
    """
    app = celery_app(settings)
    try:
        connection = app.connection_for_write()
        try:
            replies = app.control.inspect(timeout=timeout_s, connection=connection).active_queues() or {}
        except _connection_errors(connection) as exc:
            raise _unreachable(settings, exc, "cannot ask the Celery workers which queues they consume") from None
        finally:
            connection.release()
    finally:
        app.close()
    consumers: dict[str, list[str]] = {}
    for worker, queues in sorted(replies.items()):
        for queue in queues or ():
            name = queue.get("name") if isinstance(queue, dict) else None
            if isinstance(name, str):
                consumers.setdefault(name, []).append(worker)
    return consumers, sorted(replies)
