-- Statements every database runs alike (see asyncjobs/db/base.py).

-- name: ready_queue_walk
-- A loose index scan of one claim index: the smallest queue name, then the next one above
-- it, and so on, one index probe per queue. {walk}: the CTE's name; {index_hint}: SQLite's
-- "INDEXED BY" (empty elsewhere); {keys}: the claim index's own condition on limit_key, so
-- that the planner can use the index.
{walk}(queue) AS (
    SELECT (
        SELECT queue_name FROM {table}{index_hint} WHERE status = 'queued' AND {keys}
        ORDER BY queue_name LIMIT 1
    )
    UNION ALL
    SELECT (
        SELECT queue_name FROM {table}{index_hint} WHERE status = 'queued' AND {keys}
            AND queue_name > {walk}.queue
        ORDER BY queue_name LIMIT 1
    )
    FROM {walk} WHERE {walk}.queue IS NOT NULL
)

-- name: insert
-- One new job, every column ({marks}: one "%s" per column, generated).
INSERT INTO {table} ({columns}) VALUES ({marks})

-- name: count_batch_ends
-- Jobs of a batch ended: its counters move (the row's lock is held from here to the
-- commit). {returning}: "RETURNING pending, sealed_at, finished_at" where UPDATE can return
-- rows, else empty (then "batch_finishable" reads the row). The columns themselves, not
-- "finished_at IS NULL": SQLite 3.40 answered that test wrongly in a RETURNING clause.
UPDATE {table} SET pending = pending - %s, succeeded = succeeded + %s, failed = failed + %s,
    cancelled = cancelled + %s
WHERE id = %s {returning}

-- name: batch_finishable
SELECT pending, sealed_at, finished_at FROM {table} WHERE id = %s
