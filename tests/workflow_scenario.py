"""A Dify database covering the workflow-run cleanup matrix (docs/jobs/clean-workflow-runs.md,
docs/jobs/clean-workflow-logs.md).

Per tenant of the plan matrix (tests/scenario.py): a workflow app with two workflows and runs in every
status (each with node executions, an app log and a trigger log; some with offloads, pauses and reasons),
runs around the cut-off, single-step node executions without a run, and an advanced-chat app whose runs
produced messages in three conversations: one entirely old, one spanning the cut-off, and one old one that
also holds a message without a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from difymaint.core.clock import naive_utc
from difymaint.demo.builders import Builder, new_id
from difymaint.dify import tables as t
from difymaint.dify.cascades import ENDED_RUN_STATUSES, MESSAGE_CHILDREN
from tests.scenario import TENANTS, BillingMatrix

ACTIVE_STATUSES = ("running", "paused", "scheduled")
RUN_TABLES = [
    "workflow_runs",
    "workflow_node_executions",
    "workflow_node_execution_offload",
    "workflow_app_logs",
    "workflow_pauses",
    "workflow_pause_reasons",
    "workflow_trigger_logs",
]
CHAT_TABLES = [
    "messages",
    *(child.name for child in MESSAGE_CHILDREN),
    "conversations",
    "pinned_conversations",
    "workflow_conversation_variables",
    "upload_files",
]


@dataclass
class RunFamily:
    run_id: str
    tenant: str
    app_id: str
    workflow_id: str
    created_at: datetime
    status: str
    nodes: int = 0
    offloads: int = 0
    app_logs: int = 0
    trigger_logs: int = 0
    pauses: int = 0
    reasons: int = 0
    offload_files: list[str] = field(default_factory=list)
    state_key: str | None = None
    messages: list[str] = field(default_factory=list)


@dataclass
class WorkflowScenario(BillingMatrix):
    now: datetime
    tenant_ids: dict[str, str] = field(default_factory=dict)
    workflow_apps: dict[str, str] = field(default_factory=dict)
    chat_apps: dict[str, str] = field(default_factory=dict)
    main_workflow: dict[str, str] = field(default_factory=dict)
    other_workflow: dict[str, str] = field(default_factory=dict)
    runs: dict[str, RunFamily] = field(default_factory=dict)
    single_step_nodes: list[str] = field(default_factory=list)
    conversations: dict[str, dict[str, str]] = field(default_factory=dict)  # tenant → kind → id
    new_messages: dict[str, list[str]] = field(default_factory=dict)
    plain_messages: dict[str, list[str]] = field(default_factory=dict)  # messages without a run
    message_upload_files: dict[str, str] = field(default_factory=dict)  # tenant → upload file of an old message

    # --- billing matrix (plans, whitelist and cut-off from tests/scenario.py) ---------------------------------

    @staticmethod
    def eligible_tenants() -> set[str]:
        return {name for name, spec in TENANTS.items() if spec[3]}

    # --- expectations ----------------------------------------------------------------------------------------

    def old_ended(
        self,
        tenants: set[str] | None = None,
        workflow_ids: set[str] | None = None,
        app_ids: set[str] | None = None,
    ) -> set[str]:
        """Runs a cleanup with cut-off ``cutoff`` must delete."""
        return {
            run.run_id
            for run in self.runs.values()
            if run.created_at < self.cutoff
            and run.status in ENDED_RUN_STATUSES
            and (tenants is None or run.tenant in tenants)
            and (workflow_ids is None or run.workflow_id in workflow_ids)
            and (app_ids is None or run.app_id in app_ids)
        }

    def cascade_rows(self, run_ids: set[str]) -> dict[str, int]:
        runs = [self.runs[rid] for rid in run_ids]
        return {
            "workflow_runs": len(runs),
            "workflow_node_executions": sum(r.nodes for r in runs),
            "workflow_node_execution_offload": sum(r.offloads for r in runs),
            "workflow_app_logs": sum(r.app_logs for r in runs),
            "workflow_pauses": sum(r.pauses for r in runs),
            "workflow_pause_reasons": sum(r.reasons for r in runs),
            "workflow_trigger_logs": sum(r.trigger_logs for r in runs),
        }

    def messages_of(self, run_ids: set[str]) -> set[str]:
        return {mid for rid in run_ids for mid in self.runs[rid].messages}


def seed(engine: Engine, now: datetime) -> WorkflowScenario:
    now = naive_utc(now)
    scenario = WorkflowScenario(now=now)
    cutoff = scenario.cutoff
    with engine.begin() as conn:
        build = Builder(conn, now)

        def family(tenant: str, app: str, workflow: str, created: datetime, status: str, **kw: bool) -> RunFamily:
            tid = scenario.tenant_ids[tenant]
            run_type = "chat" if kw.get("chat") else "workflow"
            run_id = build.workflow_run(tid, app, workflow, created, status=status, run_type=run_type)
            run = RunFamily(run_id, tenant, app, workflow, created, status)
            nodes = [
                build.node_execution(tid, app, workflow, run_id, created, index=i + 1)
                for i in range(1 if kw.get("chat") else 2)
            ]
            run.nodes = len(nodes)
            if not kw.get("chat"):
                build.workflow_app_log(tid, app, workflow, run_id, created)
                build.workflow_trigger_log(tid, app, workflow, run_id, created)
                run.app_logs = run.trigger_logs = 1
            if kw.get("offload"):
                for kind in ("inputs", "outputs"):
                    file_id = build.upload_file(tid, created)
                    build.node_offload(tid, app, nodes[0], file_id, kind=kind)
                    run.offload_files.append(file_id)
                run.offloads = 2
            if kw.get("pause"):
                reasons = 2 if status != "paused" else 1
                pause_id = build.workflow_pause(workflow, run_id, created, resumed=status != "paused", reasons=reasons)
                with_key = conn.execute(
                    sa.select(t.workflow_pauses.c.state_object_key).where(t.workflow_pauses.c.id == pause_id)
                )
                run.state_key = str(with_key.scalar_one())
                run.pauses, run.reasons = 1, reasons
            scenario.runs[run_id] = run
            return run

        for name in TENANTS:
            tenant = build.tenant(name)
            scenario.tenant_ids[name] = tenant
            wf_app = build.app(tenant, name=f"{name} workflow", mode="workflow")
            chat_app = build.app(tenant, name=f"{name} chatflow", mode="advanced-chat")
            scenario.workflow_apps[name], scenario.chat_apps[name] = wf_app, chat_app
            main, other, chat_wf = new_id(), new_id(), new_id()
            scenario.main_workflow[name], scenario.other_workflow[name] = main, other

            # every status, old: only the ended ones may go
            for i, status in enumerate((*ENDED_RUN_STATUSES, *ACTIVE_STATUSES)):
                created = cutoff - timedelta(days=10 + i, seconds=i)
                family(
                    name,
                    wf_app,
                    main,
                    created,
                    status,
                    offload=status in ("succeeded", "paused"),
                    pause=status in ("succeeded", "paused"),
                )
            same_moment = cutoff - timedelta(days=3)  # two runs share a timestamp: the id tie-break
            family(name, wf_app, main, same_moment, "succeeded")
            family(name, wf_app, main, same_moment, "failed")
            family(name, wf_app, main, cutoff - timedelta(microseconds=1), "succeeded")  # just before
            family(name, wf_app, main, cutoff, "succeeded")  # exactly at the cut-off: kept
            family(name, wf_app, main, now - timedelta(days=1), "succeeded")
            family(name, wf_app, other, cutoff - timedelta(days=4), "succeeded")  # the other workflow
            # single-step debug executions: no run, never a cleanup target
            scenario.single_step_nodes += [
                build.node_execution(tenant, wf_app, main, None, cutoff - timedelta(days=40 + i)) for i in range(2)
            ]
            # an offload row without a node execution: garbage, but not this job's
            build.node_offload(tenant, wf_app, None, build.upload_file(tenant, cutoff - timedelta(days=40)))

            # advanced chat: messages produced by runs
            old_conv = build.conversation(chat_app, cutoff - timedelta(days=20), updated_at=cutoff - timedelta(days=2))
            spanning = build.conversation(chat_app, cutoff - timedelta(days=8), updated_at=now - timedelta(days=1))
            mixed = build.conversation(chat_app, cutoff - timedelta(days=9), updated_at=cutoff - timedelta(days=1))
            scenario.conversations[name] = {"old": old_conv, "spanning": spanning, "mixed": mixed}
            build.pin(chat_app, old_conv)
            build.conversation_variable(chat_app, old_conv)
            build.pin(chat_app, spanning)
            build.conversation_variable(chat_app, spanning)
            for i, conv in enumerate((old_conv, old_conv, spanning, mixed)):
                created = cutoff - timedelta(days=5 + i, hours=i)
                run = family(name, chat_app, chat_wf, created, "succeeded", chat=True)
                upload = build.upload_file(tenant, created) if i == 0 else None
                if upload:
                    scenario.message_upload_files[name] = upload
                run.messages.append(
                    build.message(chat_app, conv, created, workflow_run_id=run.run_id, upload_file_id=upload)
                )
            new_run = family(name, chat_app, chat_wf, now - timedelta(days=1), "succeeded", chat=True)
            new_message = build.message(chat_app, spanning, now - timedelta(days=1), workflow_run_id=new_run.run_id)
            new_run.messages.append(new_message)
            scenario.new_messages[name] = [new_message]
            scenario.plain_messages[name] = [build.message(chat_app, mixed, cutoff - timedelta(days=9))]
    return scenario


def ids(engine: Engine, table: sa.Table, column: str = "id") -> set[str]:
    with engine.connect() as conn:
        return {str(row[0]) for row in conn.execute(sa.select(table.c[column]))}


def assert_no_dangling(engine: Engine) -> None:
    """Every per-run row still has its run, every pause reason its pause, every message child its message,
    every message its conversation."""
    with engine.connect() as conn:

        def dangling(child: sa.Table, column: str, parent: sa.Table) -> int:
            col = child.c[column]
            query = (
                sa.select(sa.func.count()).select_from(child).where(col.is_not(None), ~col.in_(sa.select(parent.c.id)))
            )
            return int(conn.execute(query).scalar_one())

        checks = {
            "node executions": dangling(t.workflow_node_executions, "workflow_run_id", t.workflow_runs),
            "offloads": dangling(t.workflow_node_execution_offload, "node_execution_id", t.workflow_node_executions),
            "app logs": dangling(t.workflow_app_logs, "workflow_run_id", t.workflow_runs),
            "trigger logs": dangling(t.workflow_trigger_logs, "workflow_run_id", t.workflow_runs),
            "pauses": dangling(t.workflow_pauses, "workflow_run_id", t.workflow_runs),
            "pause reasons": dangling(t.workflow_pause_reasons, "pause_id", t.workflow_pauses),
            "messages without conversation": dangling(t.messages, "conversation_id", t.conversations),
            **{child.name: dangling(child, "message_id", t.messages) for child in MESSAGE_CHILDREN},
        }
    assert not any(checks.values()), checks
