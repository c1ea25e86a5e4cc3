"""An async web service that hands slow work to task workers (seeds 001/002: background tasks in
place of Celery): `POST /signup` queues a welcome email with `.delay()` and answers 202 at once;
`GET /runs/{id}` reports the run's state and result, from any process.

Run it for real with a server and a separate worker:

    uvicorn web_service:app                       # the web service
    python -m asyncflow.task_worker web_service:send_welcome_email   # one or more workers

`python web_service.py` runs a self-contained demo instead: the service on a loopback port, a worker
in the app's lifespan, and a client that signs up three users over HTTP.
"""
import contextlib
import socket
import threading
import time

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asyncflow import task
from asyncflow.task_worker import DelayedFuture, TaskWorker


@task(retries=2)
def send_welcome_email(address: str) -> str:
    time.sleep(0.05)  # talking to the mail server
    return f"welcome email sent to {address}"


async def signup(request: Request) -> JSONResponse:
    data = await request.json()
    future = send_welcome_email.delay(data["email"])  # queued; the response does not wait
    return JSONResponse({"task_run_id": str(future.task_run_id)}, status_code=202)


async def run_status(request: Request) -> JSONResponse:
    future = DelayedFuture(request.path_params["run_id"])
    state = await anyio.to_thread.run_sync(lambda: future.state)
    body = {"state": state.name}
    if state.is_completed():
        body["result"] = await state.result()  # in async code, State.result() is awaited
    return JSONResponse(body)


app = Starlette(routes=[Route("/signup", signup, methods=["POST"]), Route("/runs/{run_id}", run_status)])


@contextlib.asynccontextmanager
async def with_worker(app: Starlette):
    """For the demo: a task worker inside the service's own event loop."""
    worker = TaskWorker(send_welcome_email, limit=10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.start)
        yield
        worker.stop()


def demo() -> None:
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo_app = Starlette(routes=app.routes, lifespan=with_worker)
    server = uvicorn.Server(uvicorn.Config(demo_app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=10) as client:
        started = time.perf_counter()
        ids = [client.post("/signup", json={"email": f"user{i}@example.org"}).json()["task_run_id"] for i in range(3)]
        print(f"3 signups answered in {time.perf_counter() - started:.3f}s (202 Accepted, work queued)")
        for run_id in ids:
            for _ in range(300):
                status = client.get(f"/runs/{run_id}").json()
                if status["state"] == "Completed":
                    break
                time.sleep(0.02)
            print(f"run {run_id[:8]}: {status['state']} - {status.get('result')}")
    server.should_exit = True
    thread.join(10)


if __name__ == "__main__":
    demo()
