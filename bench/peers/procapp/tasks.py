from procrastinate.contrib.django import app


@app.task(name="noop")
def noop():
    return None
