"""The worker (``manage.py runworker``): ``runner`` (the loop, signals, shutdown; its
``options`` checked first, ``inprocess`` for one round in the calling thread) over
``claimer`` (what to claim), ``slots`` (slot threads, executions), ``prefetch``,
``executor`` (one job) and ``completer`` (successes in batches), ``watchdog``,
``heartbeat``, ``maintenance`` (Rescuer, Pruner, CronTicker, Promoter) and ``recovery``
(database outages). See docs/worker.md, "Inside a worker"."""
