-- SQLite's statements (see asyncjobs/db/sqlite.py). {table}, {attempt_table}: the quoted
-- tables; {columns}: the job table's quoted columns, generated from the model; {in_queues},
-- {ids}, {rows}: "%s" markers generated for the number of values (SQLite binds no arrays).

-- name: candidates
-- {index_hint}: "INDEXED BY" the claim index for some queues, the every-queue claim index
-- for every queue: either is read in claim order and the read stops at the LIMIT (see
-- SQLiteStrategy._claim).
SELECT id FROM {table}{index_hint} WHERE status = 'queued' AND limit_key = '' {in_queues}
ORDER BY priority DESC, run_after, enqueued_at LIMIT %s

-- name: start
-- queued -> running for the given jobs that are still queued (the attempt rows follow).
UPDATE {table} SET status = 'running', worker_id = %s, lease_expires_at = %s,
    attempts = attempts + 1, started_at = COALESCE(started_at, %s), last_attempted_at = %s
WHERE id IN ({ids}) AND status = 'queued'
RETURNING {columns}

-- name: close_attempts
-- complete_succeeded, first step: the attempts still open and still the worker's.
WITH d(did, dnumber, dstatus, dstart, dend) AS (VALUES {rows})
UPDATE {attempt_table} SET finished_at = d.dend,
    started_at = COALESCE(d.dstart, started_at), outcome = 'succeeded',
    http_status = d.dstatus
FROM d
WHERE job_id = d.did AND number = d.dnumber AND worker_id = %s AND finished_at IS NULL
RETURNING job_id

-- name: finish_jobs
-- complete_succeeded, second step: running -> succeeded. A unique job keeps its key for
-- unique_for after success, else frees it. Returns the jobs that have dependents.
WITH d(did, dvalue, dstart, dend) AS (VALUES {rows})
UPDATE {table} SET status = 'succeeded', return_value = d.dvalue,
    finished_at = d.dend, worker_id = '', lease_expires_at = NULL,
    last_attempted_at = COALESCE(d.dstart, last_attempted_at),
    unique_key = CASE WHEN unique_for IS NULL THEN NULL ELSE unique_key END
FROM d
WHERE id = d.did AND status = 'running' AND worker_id = %s
RETURNING id, has_dependents
