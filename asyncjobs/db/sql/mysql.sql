-- MariaDB/MySQL's statements (see asyncjobs/db/mysql.py). {table}, {attempt_table}: the
-- quoted tables; {columns}: the job table's quoted columns, generated from the model; {ids}:
-- "%s" markers generated for the number of values (neither server binds arrays).

-- name: pick
-- A claim's locking read of one queue ({in_queue}: "AND queue_name = %s") or of every queue
-- (empty). The status is a literal, as on PostgreSQL. FORCE INDEX: an ordered index scan
-- that stops at LIMIT is what keeps the locks few (see MYSQL_INDEXES), whatever the
-- optimizer's statistics say.
SELECT {columns} FROM {table} FORCE INDEX ({index})
WHERE status = 'queued' AND limit_key = '' {in_queue}
ORDER BY priority DESC, run_after, enqueued_at LIMIT %s FOR UPDATE SKIP LOCKED

-- name: pick_given
-- Jobs chosen by the caller (a claim under per-task or per-key limits), if still queued.
SELECT {columns} FROM {table} WHERE id IN ({ids}) AND status = 'queued' FOR UPDATE

-- name: start
-- queued -> running for the rows the transaction has just locked (the attempt rows follow).
UPDATE {table} SET status = 'running', worker_id = %s, lease_expires_at = %s,
    attempts = attempts + 1, started_at = COALESCE(started_at, %s), last_attempted_at = %s
WHERE id IN ({ids})

-- name: open_attempts
-- complete_succeeded, first step: lock the attempts still open and held by the worker, and
-- their jobs, reading whether each has dependents (a locking read: the latest value, and no
-- dependent can be added until this transaction ends).
SELECT a.job_id, a.number, j.has_dependents FROM {attempt_table} AS a
JOIN {table} AS j ON j.id = a.job_id
WHERE a.job_id IN ({ids}) AND a.worker_id = %s AND a.finished_at IS NULL FOR UPDATE

-- name: close_attempts
-- {values}: a derived table of "SELECT ... UNION ALL" rows, one per job (generated).
UPDATE {attempt_table} AS a JOIN ({values}) AS d ON a.job_id = d.did AND a.number = d.dnumber
SET a.finished_at = d.dend, a.started_at = COALESCE(d.dstart, a.started_at),
    a.outcome = 'succeeded', a.http_status = d.dstatus
WHERE a.worker_id = %s AND a.finished_at IS NULL

-- name: finish_jobs
-- running -> succeeded. A unique job keeps its key for unique_for after success, else
-- frees it.
UPDATE {table} AS j JOIN ({values}) AS d ON j.id = d.did
SET j.status = 'succeeded', j.return_value = d.dvalue, j.finished_at = d.dend,
    j.worker_id = '', j.lease_expires_at = NULL,
    j.last_attempted_at = COALESCE(d.dstart, j.last_attempted_at),
    j.unique_key = CASE WHEN j.unique_for IS NULL THEN NULL ELSE j.unique_key END
WHERE j.status = 'running' AND j.worker_id = %s

-- name: estimated_row_count
SELECT table_rows FROM information_schema.tables
WHERE table_schema = DATABASE() AND table_name = %s

-- name: get_lock
SELECT GET_LOCK(%s, 0)

-- name: release_lock
SELECT RELEASE_LOCK(%s)

-- name: create_index
CREATE {kind} {index} ON {table} ({columns})

-- name: create_index_online
-- Built in place while the table takes writes (asyncjobs.db.online).
CREATE INDEX {index} ON {table} ({columns}) ALGORITHM=INPLACE LOCK=NONE

-- name: drop_index
DROP INDEX {index} ON {table}

-- name: rename_index
-- Only the name changes, in the data dictionary: nothing is read or rebuilt, and the table
-- takes writes meanwhile (asyncjobs.db.online).
ALTER TABLE {table} RENAME INDEX {old} TO {new}, ALGORITHM=INPLACE, LOCK=NONE
