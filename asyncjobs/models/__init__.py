"""Jobs, their attempts, and the workers that run them.

The database is the queue. A ``Job`` row is the durable record of one enqueued task call; each
execution of it adds an ``Attempt`` row; each ``runworker`` process keeps a ``Worker`` row
alive with heartbeats. See DESIGN.md for the lifecycle.
"""

# One module per concern; every public name is importable from here, and Django finds the
# models here (importing a module registers its models with the app).
from asyncjobs.models.fields import WRAPPED_JSON_KEY as WRAPPED_JSON_KEY
from asyncjobs.models.fields import StoredJSONField as StoredJSONField
from asyncjobs.models.fields import loaded_json as loaded_json
from asyncjobs.models.fields import storable_json_text as storable_json_text
from asyncjobs.models.jobs import ACTIVE_STATUSES as ACTIVE_STATUSES
from asyncjobs.models.jobs import TASK_RESULT_STATUS as TASK_RESULT_STATUS
from asyncjobs.models.jobs import TERMINAL_STATUSES as TERMINAL_STATUSES
from asyncjobs.models.jobs import UNSTARTED_STATUSES as UNSTARTED_STATUSES
from asyncjobs.models.jobs import Attempt as Attempt
from asyncjobs.models.jobs import AttemptOutcome as AttemptOutcome
from asyncjobs.models.jobs import Dashboard as Dashboard
from asyncjobs.models.jobs import Job as Job
from asyncjobs.models.jobs import JobQuerySet as JobQuerySet
from asyncjobs.models.jobs import JobStatus as JobStatus
from asyncjobs.models.limits import LimitState as LimitState
from asyncjobs.models.limits import QueueState as QueueState
from asyncjobs.models.schedules import Schedule as Schedule
from asyncjobs.models.schedules import ScheduleTick as ScheduleTick
from asyncjobs.models.workers import Lease as Lease
from asyncjobs.models.workers import LeaseQuerySet as LeaseQuerySet
from asyncjobs.models.workers import Worker as Worker
from asyncjobs.models.workers import WorkerQuerySet as WorkerQuerySet
from asyncjobs.models.workers import WorkerStatus as WorkerStatus
from asyncjobs.models.workflows import Batch as Batch
from asyncjobs.models.workflows import BatchState as BatchState
from asyncjobs.models.workflows import DependencyPolicy as DependencyPolicy
from asyncjobs.models.workflows import JobDependency as JobDependency
