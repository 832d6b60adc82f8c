"""The operations on jobs: one code path each, shared by the backend, the worker, the admin
and the API.

Every function that needs the time takes a keyword-only ``now``; only the edges (the backend,
the worker loop, views) read the clock. Every state change is a conditional UPDATE on the
status the change starts from, so concurrent workers, rescues and operators cannot step on
each other: the loser's UPDATE matches no row.

One module per concern, lower ones first (import-linter holds the order):

- ``policy``: the retry policy a job is enqueued with, and whether an error is retried;
- ``values``: arguments and results as stored, JSON checks and size limits;
- ``results``: a job's ``TaskResult``, and whether a signal carrying one is heard;
- ``deadlocks``: a transaction that the database failed to break a deadlock, run again;
- ``enqueue``: building and storing jobs, unique keys, queue caps, scheduled jobs falling due;
- ``webhooks``: end-of-job webhooks and HTTP callback jobs;
- ``batches``: batches' counters, kept by each transition of a member job, and callbacks;
- ``dependencies``: jobs that wait for others (``depends_on``, chains);
- ``attempts``: an attempt's claim, success and failure, and jobs given back or rescued;
- ``limits``: claims under rate and concurrency limits;
- ``workers``, ``queues``, ``pruning``: the worker registry, queue pauses, deleting jobs;
- ``operator``: retry, run now, cancel, progress;
- ``bulk``: "cancel the rest" of a batch, in chunks, in the request or as a job.

Callers use this package (``from asyncjobs import services``; ``services.enqueue_jobs``):
every name is re-exported here.
"""

from asyncjobs import retry
from asyncjobs.conf import jobs_settings
from asyncjobs.services.attempts import (
    MAX_ERROR_MESSAGE,
    MAX_TRACEBACK,
    Success,
    claim_job,
    error_fields,
    http_status_of,
    record_failure,
    record_success,
    record_successes,
    release_jobs,
    rescue_expired,
    unclaim_jobs,
)
from asyncjobs.services.batches import (
    BATCH_WEBHOOK_TASK,
    Ended,
    batch_summary,
    callback_spec,
    create_batch,
    finish_stranded,
    jobs_added,
    jobs_ended,
    jobs_reopened,
    seal_batch,
)
from asyncjobs.services.bulk import (
    CANCEL_BATCH_TASK,
    CANCEL_CHUNK,
    CANCEL_INLINE_LIMIT,
    BatchCancel,
    batch_cancel_job,
    can_cancel_jobs,
    cancel_batch,
    cancel_batch_jobs,
)
from asyncjobs.services.deadlocks import DEADLOCK_TRIES, restorer, retry_deadlocks
from asyncjobs.services.dependencies import (
    Requirement,
    dependencies_of,
    dependents_of,
    enqueue_dependents,
    parse_ids,
)
from asyncjobs.services.enqueue import (
    IDENTITY_CACHE_SIZE,
    JobFactory,
    JobMaker,
    build_job,
    by_identity,
    call_key,
    current_owner,
    enqueue_jobs,
    enqueue_unique,
    enqueued_by,
    job_maker,
    promote_due,
)
from asyncjobs.services.limits import (
    START_ALLOWANCE,
    START_HANDOFF,
    START_LEAD,
    START_TOLERANCE,
    LimitedClaim,
    claim_keyed,
    claim_limited,
    keyed_waiting,
    queue_limits,
    start_slot,
    start_spacing,
)
from asyncjobs.services.operator import (
    RETRYABLE_STATUSES,
    Cancelled,
    cancel_job,
    cancel_jobs,
    estimated_row_count,
    retry_job,
    retry_jobs,
    run_job_now,
    set_progress,
)
from asyncjobs.services.policy import JobOptions, class_path, is_retryable, resolve_options
from asyncjobs.services.pruning import batch_retention, discard_jobs, prune_batches, prune_jobs
from asyncjobs.services.queues import (
    PAUSE_QUEUE_PERMISSION,
    can_pause_queues,
    check_queue_name,
    paused_queues,
    set_queue_paused,
)
from asyncjobs.services.results import observed, receiver_acts_when, task_result
from asyncjobs.services.values import (
    check_result_size,
    checked_json,
    json_excerpt,
    json_size,
    storable_json,
    storable_json_sized,
)
from asyncjobs.services.webhooks import (
    CALLBACK_TASK,
    OUTBOUND_FAIL_ON,
    WEBHOOK_TASK,
    enqueue_callback,
    schedule_webhook,
)
from asyncjobs.services.workers import (
    heartbeat,
    mark_lost_workers,
    new_worker_id,
    prune_workers,
    register_worker,
    set_worker_status,
)

__all__ = [
    "BATCH_WEBHOOK_TASK",
    "CALLBACK_TASK",
    "CANCEL_BATCH_TASK",
    "CANCEL_CHUNK",
    "CANCEL_INLINE_LIMIT",
    "DEADLOCK_TRIES",
    "IDENTITY_CACHE_SIZE",
    "MAX_ERROR_MESSAGE",
    "MAX_TRACEBACK",
    "OUTBOUND_FAIL_ON",
    "PAUSE_QUEUE_PERMISSION",
    "RETRYABLE_STATUSES",
    "START_ALLOWANCE",
    "START_HANDOFF",
    "START_LEAD",
    "START_TOLERANCE",
    "WEBHOOK_TASK",
    "BatchCancel",
    "Cancelled",
    "Ended",
    "JobFactory",
    "JobMaker",
    "JobOptions",
    "LimitedClaim",
    "Requirement",
    "Success",
    "batch_cancel_job",
    "batch_retention",
    "batch_summary",
    "build_job",
    "by_identity",
    "call_key",
    "callback_spec",
    "can_cancel_jobs",
    "can_pause_queues",
    "cancel_batch",
    "cancel_batch_jobs",
    "cancel_job",
    "cancel_jobs",
    "check_queue_name",
    "check_result_size",
    "checked_json",
    "claim_job",
    "claim_keyed",
    "claim_limited",
    "class_path",
    "create_batch",
    "current_owner",
    "dependencies_of",
    "dependents_of",
    "discard_jobs",
    "enqueue_callback",
    "enqueue_dependents",
    "enqueue_jobs",
    "enqueue_unique",
    "enqueued_by",
    "error_fields",
    "estimated_row_count",
    "finish_stranded",
    "heartbeat",
    "http_status_of",
    "is_retryable",
    "job_maker",
    "jobs_added",
    "jobs_ended",
    "jobs_reopened",
    "jobs_settings",
    "json_excerpt",
    "json_size",
    "keyed_waiting",
    "mark_lost_workers",
    "new_worker_id",
    "observed",
    "parse_ids",
    "paused_queues",
    "promote_due",
    "prune_batches",
    "prune_jobs",
    "prune_workers",
    "queue_limits",
    "receiver_acts_when",
    "record_failure",
    "record_success",
    "record_successes",
    "register_worker",
    "release_jobs",
    "rescue_expired",
    "resolve_options",
    "restorer",
    "retry",
    "retry_deadlocks",
    "retry_job",
    "retry_jobs",
    "run_job_now",
    "schedule_webhook",
    "seal_batch",
    "set_progress",
    "set_queue_paused",
    "set_worker_status",
    "start_slot",
    "start_spacing",
    "storable_json",
    "storable_json_sized",
    "task_result",
    "unclaim_jobs",
]
