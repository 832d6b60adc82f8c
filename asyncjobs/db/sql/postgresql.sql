-- PostgreSQL's statements (see asyncjobs/db/postgresql.py). {table}, {attempt_table}: the
-- quoted tables; {columns}: the job table's quoted columns, generated from the model.

-- name: pick_every_queue
-- The best ready jobs that no one else holds, whatever their queue: an ordered scan of the
-- every-queue claim index (asyncjobs_job_claim_all), which stops at the LIMIT; the claim
-- index, led by the queue, would have every ready job sorted on each claim. The status is a
-- literal, not a parameter, so that the planner always matches the partial index (even
-- with server-side binding and generic plans).
SELECT id FROM {table} WHERE status = 'queued' AND limit_key = ''
ORDER BY priority DESC, run_after, enqueued_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED

-- name: pick_queues
-- Per queue an ordered scan of the claim index, then the best of those. A plain
-- "queue_name = ANY(...)" makes PostgreSQL sort every ready job on each claim.
SELECT j.id FROM unnest(%(queues)s::text[]) AS q(name)
CROSS JOIN LATERAL (
    SELECT id, priority, run_after, enqueued_at FROM {table}
    WHERE status = 'queued' AND limit_key = '' AND queue_name = q.name
    ORDER BY priority DESC, run_after, enqueued_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
) AS j
ORDER BY j.priority DESC, j.run_after, j.enqueued_at LIMIT %(limit)s

-- name: pick_given
-- Jobs chosen by the caller (a claim under per-task or per-key limits).
SELECT id FROM unnest(%(ids)s::uuid[]) AS given(id)

-- name: start
-- queued -> running, and the attempt rows, for the jobs {picked} selects: one statement, so
-- it is atomic even in autocommit. A job no longer queued (taken meanwhile) is left alone.
-- {commit}: "on", or "off" to commit this transaction without waiting for its WAL flush
-- (set_config's third argument makes it last for this transaction only: safe behind a
-- transaction pooler); read only where a job is claimed, when there is something to flush.
-- The claim runs as a prepared statement (see postgresql.py), whose generic plan cannot see
-- the limit: joined to "picked", the rows to update were estimated at a tenth of the table,
-- and that plan read the whole table by a sequential scan (hundreds of ms at 200,000 ready
-- jobs). Picked ids as an array are always looked up by the primary key.
WITH picked AS ({picked}
), commit_mode AS (
    SELECT set_config('synchronous_commit', '{commit}', true) AS setting
), claimed AS (
    UPDATE {table} AS j SET status = 'running', worker_id = %(worker)s,
        lease_expires_at = %(lease)s, attempts = j.attempts + 1,
        started_at = COALESCE(j.started_at, %(now)s), last_attempted_at = %(now)s
    FROM commit_mode WHERE j.id = ANY(ARRAY(SELECT id FROM picked)) AND j.status = 'queued'
    RETURNING {claimed_columns}
), recorded AS (
    INSERT INTO {attempt_table}
        (job_id, number, worker_id, started_at, outcome, error_class, error_message, traceback)
    SELECT id, attempts, %(worker)s, %(now)s, '', '', '', '' FROM claimed
)
SELECT {columns} FROM claimed

-- name: complete_succeeded
-- running -> succeeded for a batch, which travels as arrays (binary ones: "%(ids)b"; the
-- caller makes them "%(ids)s" where it cannot bind binary). An attempt is closed only if it
-- is still open and still the worker's, and only those jobs move. A unique job keeps its
-- key for unique_for after success, else frees it. Each recorded job comes with whether it
-- has dependents, read from the row as this statement locked it (a dependent added at the
-- same moment is either seen here or finds the job succeeded). {counting}, {nothing},
-- {counted}: empty, or the fragments of complete_succeeded_counting below.
WITH d AS (
    SELECT * FROM unnest(%(ids)b::uuid[], %(numbers)b::integer[],
        %(statuses)b::integer[], %(starts)b::timestamptz[], %(ends)b::timestamptz[],
        %(values)b::text[]) AS d(did, dnumber, dstatus, dstart, dend, dvalue)
), closed AS (
    UPDATE {attempt_table} AS a SET finished_at = d.dend,
        started_at = COALESCE(d.dstart, a.started_at), outcome = 'succeeded',
        http_status = d.dstatus
    FROM d
    WHERE a.job_id = d.did AND a.number = d.dnumber AND a.worker_id = %(worker)s
        AND a.finished_at IS NULL
    RETURNING a.job_id
), finished AS (
    UPDATE {table} AS j SET status = 'succeeded', return_value = d.dvalue::jsonb,
        finished_at = d.dend, worker_id = '', lease_expires_at = NULL,
        last_attempted_at = COALESCE(d.dstart, j.last_attempted_at),
        unique_key = CASE WHEN j.unique_for IS NULL THEN NULL ELSE j.unique_key END
    FROM d JOIN closed ON closed.job_id = d.did
    WHERE j.id = d.did AND j.status = 'running' AND j.worker_id = %(worker)s
    RETURNING j.id, j.has_dependents, j.batch_id
){counting}
SELECT closed.job_id, finished.has_dependents{nothing}
FROM closed LEFT JOIN finished ON finished.id = closed.job_id{counted}

-- name: complete_succeeded_counting
-- The step complete_succeeded takes for a flush holding jobs of batches, in three
-- fragments: {counting} (its CTEs), {nothing} (the job rows' empty batch columns),
-- {counted} (a row per batch). Each batch's row is locked only if no one holds it (SKIP
-- LOCKED: never a wait, so several batches need no lock order): then the count goes on the
-- row, with the tallies others left ("folded"); else into a new BatchTally row, which waits
-- for no one. A batch's row: its id, whether this statement holds its lock, what is left
-- of it (held: the row's pending now; else the pending this statement's snapshot shows,
-- less the tallies it sees and this count: flushes of others not yet committed are not
-- seen), whether it is sealed, and whether it has finished.
, counts AS (
    SELECT batch_id, count(*)::integer AS n FROM finished WHERE batch_id IS NOT NULL
    GROUP BY batch_id
), held AS MATERIALIZED (
    SELECT b.id FROM {batch_table} AS b JOIN counts ON counts.batch_id = b.id
    FOR UPDATE OF b SKIP LOCKED
), folded AS (
    DELETE FROM {tally_table} AS t USING held WHERE t.batch_id = held.id
    RETURNING t.batch_id, t.succeeded, t.failed, t.cancelled
), counted AS (
    UPDATE {batch_table} AS b SET
        pending = b.pending - counts.n - f.succeeded - f.failed - f.cancelled,
        succeeded = b.succeeded + counts.n + f.succeeded,
        failed = b.failed + f.failed, cancelled = b.cancelled + f.cancelled
    FROM held JOIN counts ON counts.batch_id = held.id
    CROSS JOIN LATERAL (
        SELECT COALESCE(sum(succeeded), 0) AS succeeded, COALESCE(sum(failed), 0) AS failed,
            COALESCE(sum(cancelled), 0) AS cancelled
        FROM folded WHERE folded.batch_id = held.id
    ) AS f
    WHERE b.id = held.id
    RETURNING b.id, b.pending, b.sealed_at, b.finished_at
), tallied AS (
    INSERT INTO {tally_table} (batch_id, succeeded, failed, cancelled)
    SELECT counts.batch_id, counts.n, 0, 0 FROM counts
    WHERE counts.batch_id NOT IN (SELECT id FROM held)
    RETURNING batch_id
), seen AS (
    SELECT b.id, b.pending - counts.n - COALESCE((
            SELECT sum(t.succeeded + t.failed + t.cancelled) FROM {tally_table} AS t
            WHERE t.batch_id = b.id
        ), 0) AS pending, b.sealed_at, b.finished_at
    FROM {batch_table} AS b JOIN counts ON counts.batch_id = b.id
    WHERE b.id NOT IN (SELECT id FROM held)
)

-- name: complete_succeeded_nothing
, NULL::uuid, NULL::boolean, NULL::bigint, NULL::timestamptz, NULL::timestamptz

-- name: complete_succeeded_counted
UNION ALL SELECT NULL, NULL, id, true, pending, sealed_at, finished_at FROM counted
UNION ALL SELECT NULL, NULL, id, false, pending, sealed_at, finished_at FROM seen

-- name: count_batch_ends
-- Jobs of a batch ended (or none: a fold alone), in a transaction that holds the batch
-- row's lock (lock_batch, a statement of its own, so that this one's snapshot is taken
-- after the lock: every tally committed before is seen). The tallies left by others are
-- deleted and added to the row with this count. Returns what the row holds now.
WITH folded AS (
    DELETE FROM {tally_table} WHERE batch_id = %(batch)s
    RETURNING succeeded, failed, cancelled
), f AS (
    SELECT COALESCE(sum(succeeded), 0) AS succeeded, COALESCE(sum(failed), 0) AS failed,
        COALESCE(sum(cancelled), 0) AS cancelled
    FROM folded
)
UPDATE {batch_table} AS b SET
    pending = b.pending - %(ended)s - f.succeeded - f.failed - f.cancelled,
    succeeded = b.succeeded + %(succeeded)s + f.succeeded,
    failed = b.failed + %(failed)s + f.failed,
    cancelled = b.cancelled + %(cancelled)s + f.cancelled
FROM f WHERE b.id = %(batch)s
RETURNING b.pending, b.sealed_at, b.finished_at

-- name: lock_batch
SELECT id FROM {batch_table} WHERE id = %(batch)s FOR UPDATE


-- name: copy
COPY {table} ({columns}) FROM STDIN

-- name: estimated_row_count
SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass

-- name: notify
SELECT pg_notify(%s, %s)

-- name: notify_functions
-- The NOTIFY triggers' functions. New rows that are ready announce their queue once per
-- statement (bulk inserts send one notification per queue, and one more if some of the jobs
-- are under a per-task or per-key limit); updates that make a job ready (retry, rescue,
-- promotion) announce it per row. PostgreSQL folds duplicate notifications within a
-- transaction. {channel}, {ready}, {keyed}: see asyncjobs/db/base.py.
CREATE OR REPLACE FUNCTION asyncjobs_notify_inserted() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('{channel}', q.kind || ':' || q.queue_name)
    FROM (
        SELECT DISTINCT
            CASE WHEN limit_key = '' THEN '{ready}' ELSE '{keyed}' END AS kind, queue_name
        FROM new_rows WHERE status = 'queued'
    ) AS q;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION asyncjobs_notify_ready() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify(
        '{channel}',
        CASE WHEN NEW.limit_key = '' THEN '{ready}:' ELSE '{keyed}:' END || NEW.queue_name
    );
    RETURN NULL;
END $$ LANGUAGE plpgsql;

-- name: notify_triggers
-- Updates are filtered by WHEN, so that claims and completions pay nothing.
CREATE TRIGGER asyncjobs_job_inserted AFTER INSERT ON {table}
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION asyncjobs_notify_inserted();

CREATE TRIGGER asyncjobs_job_ready AFTER UPDATE OF status ON {table}
    FOR EACH ROW WHEN (NEW.status = 'queued' AND OLD.status IS DISTINCT FROM 'queued')
    EXECUTE FUNCTION asyncjobs_notify_ready();

-- name: drop_notify_triggers
DROP TRIGGER IF EXISTS asyncjobs_job_ready ON {table};
DROP TRIGGER IF EXISTS asyncjobs_job_inserted ON {table};
DROP FUNCTION IF EXISTS asyncjobs_notify_ready();
DROP FUNCTION IF EXISTS asyncjobs_notify_inserted();

-- name: validate_constraint
-- Reads the rows under SHARE UPDATE EXCLUSIVE: writes to the table go on meanwhile.
ALTER TABLE {table} VALIDATE CONSTRAINT {name}

-- name: index_valid
-- Whether the index of that name, as the search path finds it (as Django's CREATE INDEX and
-- DROP INDEX do), is valid: no row if there is none, false if a CREATE INDEX CONCURRENTLY
-- that built it failed (asyncjobs.db.online).
SELECT i.indisvalid FROM pg_index AS i WHERE i.indexrelid = to_regclass(quote_ident(%s))
