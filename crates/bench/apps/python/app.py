"""A WSGI app for the bench's `peers` section: answers every request with its pid.

Served by gunicorn (sync workers), bare or under a manager. Graceful shutdown is gunicorn's:
on SIGTERM a sync worker finishes the request in hand and exits; it never keeps a connection
alive (every response carries `Connection: close`).
"""

import os

PID = os.getpid()


def app(environ, start_response):
    body = f"{os.getpid()}\n".encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]
