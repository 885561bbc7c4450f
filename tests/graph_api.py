"""A real local HTTP server answering like Meta's Graph API ``GET /{version}/{leadgen_id}``, for the Meta fetcher."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

GRAPH_ERRORS = Path(__file__).resolve().parent / "fixtures" / "graph"


class GraphApi:
    """Answers each request with the next queued answer, then with ``lead``; records the path and credentials."""

    def __init__(self, lead: bytes) -> None:
        self.lead = lead
        self.answers: list[tuple[int, bytes]] = []
        self.requests: list[tuple[str, str | None]] = []
        graph = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                graph.requests.append((self.path, self.headers.get("Authorization")))
                status, body = graph.answers.pop(0) if graph.answers else (200, graph.lead)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def error(self, name: str, times: int = 1) -> None:
        """Answer the next ``times`` requests with HTTP 400 and the Graph error body ``fixtures/graph/<name>.json``."""
        self.answers += [(400, (GRAPH_ERRORS / f"{name}.json").read_bytes())] * times


@contextlib.contextmanager
def graph_api(lead: bytes) -> Iterator[GraphApi]:
    """The server, listening on a free port in a thread, for the ``with`` block."""
    api = GraphApi(lead)
    thread = threading.Thread(target=api.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        api.server.shutdown()
        api.server.server_close()
