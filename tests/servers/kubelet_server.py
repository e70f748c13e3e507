#!/usr/bin/env python3
"""The one part of a kubelet that Dray's Job verification tests need: container logs, as the
API server asks a node's kubelet for them (`GET /containerLogs/NS/POD/CONTAINER?follow=true`),
over HTTPS. No kubelet can run here; this plays exactly that documented endpoint.

    kubelet_server.py <directory> <cert.pem> <key.pem>

A container's log is the file `<directory>/NS_POD_CONTAINER.log`; while `...log.done` does not
exist the container is still running, and a follower keeps getting what is appended. Prints
'listening on 127.0.0.1:<port>' once it serves.
"""
import os
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

root, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urlparse(self.path)
        parts = url.path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "containerLogs":
            self.send_error(404)
            return
        log = os.path.join(root, "%s_%s_%s.log" % tuple(parts[1:]))
        follow = parse_qs(url.query).get("follow", ["false"])[0] == "true"
        if not os.path.exists(log):
            self.send_error(404, "no such container")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        sent = 0
        while True:
            with open(log, "rb") as f:
                f.seek(sent)
                chunk = f.read()
            if chunk:
                self.wfile.write(chunk)
                self.wfile.flush()
                sent += len(chunk)
            if not follow or os.path.exists(log + ".done"):
                with open(log, "rb") as f:
                    f.seek(sent)
                    self.wfile.write(f.read())
                return
            time.sleep(0.05)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("listening on 127.0.0.1:%d" % server.server_address[1], flush=True)
server.serve_forever()
