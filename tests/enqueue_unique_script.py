"""Run as a separate process by tests/test_unique.py: enqueue one keyed job, print its id."""

import sys

import django

django.setup()

from tests import tasks  # noqa: E402

if __name__ == "__main__":
    result = tasks.add.using(unique_key=sys.argv[1]).enqueue(1, 1)
    print(result.id)
