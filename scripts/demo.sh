#!/usr/bin/env bash
# The demo: set up .venv, migrate the example project's SQLite database, create an admin user
# (printed), enqueue demo jobs, then run the web server and a worker until Ctrl-C.
# DATABASE_URL=postgres://... runs the same project on PostgreSQL. PORT picks the port.
source "$(dirname "${BASH_SOURCE[0]}")/_python.sh"
ensure_venv
cd "$ROOT"
PY="$VENV/bin/python"
PORT="${PORT:-8000}"
export DJANGO_SETTINGS_MODULE=example_project.settings PYTHONPATH="$ROOT"
# Debug on, explicitly: the settings default is off, and with debug off the project refuses
# to start without a strong DJANGO_SECRET_KEY. The server listens on 127.0.0.1 only.
export DJANGO_DEBUG="${DJANGO_DEBUG:-1}"

export DEMO_BASE_URL="http://127.0.0.1:$PORT"
"$PY" manage.py migrate --verbosity 0
"$PY" manage.py demo_setup

pids=()
stop() {
    trap - INT TERM EXIT
    echo
    echo "==> stopping the server and the worker"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait
    exit 0
}
trap stop INT TERM EXIT

"$PY" manage.py runserver "127.0.0.1:$PORT" --noreload &
pids+=($!)
"$PY" manage.py runworker --concurrency 4 &
pids+=($!)

cat <<EOM

  asyncjobs demo running
    demo page   http://127.0.0.1:$PORT/   (the five scenarios)
    sign-up     http://127.0.0.1:$PORT/signup/   (a batch of five vs synchronous, timed)
    checkout    http://127.0.0.1:$PORT/checkout/
    report      http://127.0.0.1:$PORT/reports/   (a batch of chunks, live bar)
    partner API http://127.0.0.1:$PORT/partner/   (rate-limited queue)
    admin       http://127.0.0.1:$PORT/admin/   (user and password above)
    dashboard   http://127.0.0.1:$PORT/admin/asyncjobs/dashboard/
    batches     http://127.0.0.1:$PORT/admin/asyncjobs/batch/
    dead letter http://127.0.0.1:$PORT/admin/asyncjobs/job/dead-letter/
    metrics     http://127.0.0.1:$PORT/metrics/   (as a logged-in staff user)
    job API     http://127.0.0.1:$PORT/jobs/<id>/   (after logging in to the admin)
    API schema  http://127.0.0.1:$PORT/api/schema/  (docs at /api/docs/)
  Ctrl-C stops the server and the worker (the worker finishes its running jobs first).

EOM
if [ -n "${DEMO_SECONDS:-}" ]; then
    sleep "$DEMO_SECONDS"   # for scripted runs: stop by itself
    stop
fi
wait
