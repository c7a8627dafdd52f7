"""`streamsense status` and `model list` look for workers on the metrics ports after the first
worker's; those ports may belong to other services, which must read as "no worker there"."""

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from streams.adapters.worker_probe import probe_workers, shadow_comparison
from streams.settings import Settings

_WORKER = ('streamsense_events_in_total{topic="reviews"} 10.0\n'
           'streamsense_shadow_texts_total{served="a",shadow="b"} 4.0\n')


def _http(body: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _binary() -> socket.socket:
    """A port that answers every connection with bytes that are not HTTP (Kafka, gRPC)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            conn, _ = listener.accept()
            conn.recv(1024)
            conn.sendall(b"\x00\x00\x00\x10\x00@\x00\x00@\xfe\x00\x00\x00?")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener


def test_ports_of_other_services_are_not_workers_and_do_not_crash_the_probe():
    # A make test run found `model list` crashing with BadStatusLine: a broker had taken one
    # of the ports after the worker's.
    others = {"binary": _binary(), "html": _http(b"<html><body>hello</body></html>"),
              "other exporter": _http(b'nv_inference_count{model="x"} 3\n'), "not utf-8": _http(b"\xff\xfe\x00")}
    for name, other in others.items():
        port = other.getsockname()[1] if isinstance(other, socket.socket) else other.server_address[1]
        settings = Settings(metrics_port=port)
        assert shadow_comparison(settings, max_workers=1) == {}, name
        assert probe_workers(settings, max_workers=1, interval_s=0.01) == [], name
    worker = _http(_WORKER.encode())
    settings = Settings(metrics_port=worker.server_address[1])
    assert shadow_comparison(settings, max_workers=1)[("a", "b")]["texts"] == 4.0
    [snapshot] = probe_workers(settings, max_workers=1, interval_s=0.01)
    assert snapshot.index == 0
