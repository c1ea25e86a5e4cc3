"""A tiny fake of the GitHub and httpbin APIs, served locally so the examples never touch the internet.

Importing this module does nothing; `base_url()` starts a threaded `http.server` on 127.0.0.1 with an
ephemeral port (once per process, as a daemon thread) and returns its base URL, e.g.
``http://127.0.0.1:54321``.

Routes:

- ``GET /repos/<owner>/<name>``: repository statistics (``stargazers_count``, ``forks_count``,
  ``open_issues_count``, ...).
- ``GET /repos/<owner>/<name>/issues?page=&per_page=``: one page of open issues, each with ``user.id``.
- ``GET /status/<code>``: an empty response with that status code (like httpbin.org/status/<code>).
- ``GET /flaky/<key>?failures=N``: answers 503 to the first N requests for ``<key>``, then 200 with JSON
  (a "brittle service" for the retry examples).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

#: The fake repositories: stargazers, forks, open issues, and how many distinct users opened them.
REPOS: dict[str, dict[str, int]] = {
    "PrefectHQ/prefect": {"stargazers_count": 12157, "forks_count": 1251, "open_issues_count": 681, "users": 300},
    "anyio/asyncflow": {"stargazers_count": 42, "forks_count": 7, "open_issues_count": 5, "users": 2},
}

_lock = threading.Lock()
_server: ThreadingHTTPServer | None = None
_flaky_counts: dict[str, int] = {}


def _issues(repo: str, page: int, per_page: int) -> list[dict]:
    info = REPOS[repo]
    total, users = info["open_issues_count"], info["users"]
    start = (page - 1) * per_page
    numbers = range(start + 1, min(start + per_page, total) + 1)
    return [
        {"number": n, "title": f"Issue #{n}", "state": "open",
         "user": {"id": 1000 + (n % users), "login": f"user{n % users}"}}
        for n in numbers
    ]


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep the examples' output clean
        pass

    def _send(self, status: int, payload: object | None = None) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = [p for p in url.path.split("/") if p]
        if len(parts) == 2 and parts[0] == "status" and parts[1].isdigit():
            status = int(parts[1])
            return self._send(status, {"status": status} if 200 <= status < 300 else None)
        if len(parts) == 2 and parts[0] == "flaky":
            failures = int(query.get("failures", "1"))
            with _lock:
                seen = _flaky_counts[parts[1]] = _flaky_counts.get(parts[1], 0) + 1
            if seen <= failures:
                return self._send(503)
            return self._send(200, {"key": parts[1], "attempt": seen, "data": "hello from the brittle service"})
        if len(parts) >= 3 and parts[0] == "repos":
            repo = f"{parts[1]}/{parts[2]}"
            if repo not in REPOS:
                return self._send(404, {"message": "Not Found"})
            if len(parts) == 3:
                info = REPOS[repo]
                return self._send(200, {
                    "full_name": repo,
                    "stargazers_count": info["stargazers_count"],
                    "forks_count": info["forks_count"],
                    "open_issues_count": info["open_issues_count"],
                })
            if len(parts) == 4 and parts[3] == "issues":
                page = int(query.get("page", "1"))
                per_page = int(query.get("per_page", "30"))
                return self._send(200, _issues(repo, page, per_page))
        return self._send(404, {"message": "Not Found"})


def base_url() -> str:
    """Start the local API (once) and return its base URL, like ``http://127.0.0.1:54321``."""
    global _server
    with _lock:
        if _server is None:
            _server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
            _server.daemon_threads = True
            threading.Thread(target=_server.serve_forever, name="local-api", daemon=True).start()
        host, port = _server.server_address[:2]
    return f"http://{host}:{port}"
