import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.test import APIClient


class Recorder(BaseHTTPRequestHandler):
    """Answers by path: /ok 200, /fail 500, /missing 404, /slow sleeps past the client's
    timeout, /flaky 500 then 200, /throttled 429 with Retry-After, /redirect-metadata 302 to
    the cloud metadata address, /redirect-ok 302 to /ok; records every request."""

    def log_message(self, *args):
        pass

    def _handle(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        server = self.server
        server.requests.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )
        path = self.path.split("?")[0]
        hits = sum(1 for r in server.requests if r["path"].split("?")[0] == path)
        if path == "/slow":
            time.sleep(3)
        status, headers = 200, {}
        if path in ("/fail",) or (path == "/flaky" and hits == 1):
            status = 500
        elif path == "/missing":
            status = 404
        elif path == "/throttled":
            status, headers = 429, {"Retry-After": "7"}
        elif path == "/redirect-metadata":
            status, headers = 302, {"Location": "http://169.254.169.254/latest/meta-data/"}
        elif path == "/redirect-ok":
            status, headers = 302, {"Location": "/ok"}
        payload = json.dumps({"path": path, "hits": hits}).encode()
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


@pytest.fixture
def http_server():
    """A real HTTP server on 127.0.0.1 (an ephemeral port) in a thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.requests = []
    server.daemon_threads = True
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def users(db):
    """anonymous (None), other, owner, staff without permissions, staff with them."""

    def make(name, staff=False, perms=()):
        user = User.objects.create_user(name, password="pw", is_staff=staff)
        for codename in perms:
            user.user_permissions.add(Permission.objects.get(codename=codename))
        return User.objects.get(pk=user.pk)  # fresh permission cache

    return {
        "anonymous": None,
        "other": make("other"),
        "owner": make("owner"),
        "staff": make("staff", staff=True),
        "operator": make(
            "operator", staff=True, perms=("retry_job", "cancel_job", "add_job", "view_job")
        ),
        "client": make("client", perms=("add_job",)),
    }


@pytest.fixture
def api():
    """An APIClient per user (``api(user)``; ``api(None)`` is anonymous)."""

    def build(user):
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return build
