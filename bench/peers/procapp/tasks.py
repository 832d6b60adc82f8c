from procrastinate.contrib.django import app

from bench.latency import record


@app.task(name="noop")
def noop(enqueued_at=None):
    record(enqueued_at)
