#!/usr/bin/env python3
"""A static Helm chart repository for Dray's tests: serves a directory (index.yaml and the
chart archives) over HTTP, with optional basic auth, as many teams host one.

    chart_repo_server.py <directory> <port|0> [user:pass]

Prints 'listening on 127.0.0.1:<port>' once it serves. With CHART_REPO_LOG set, appends each
request to that file as 'PATH AUTHORIZATION' ('-' for none).
"""
import base64
import os
import sys
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

root, port = sys.argv[1], int(sys.argv[2])
creds = sys.argv[3] if len(sys.argv) > 3 else None
expected = "Basic " + base64.b64encode(creds.encode()).decode() if creds else None


class Handler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _allowed(self):
        log = os.environ.get("CHART_REPO_LOG")
        if log:
            with open(log, "a") as f:
                f.write("%s %s\n" % (self.path, self.headers.get("Authorization", "-")))
        if expected is None or self.headers.get("Authorization") == expected:
            return True
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="charts"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def do_GET(self):
        if self._allowed():
            super().do_GET()

    def do_HEAD(self):
        if self._allowed():
            super().do_HEAD()


server = ThreadingHTTPServer(("127.0.0.1", port), partial(Handler, directory=root))
print("listening on 127.0.0.1:%d" % server.server_address[1], flush=True)
server.serve_forever()
