"""Seed: tasks concepts page, "Delaying a task (.delay())".

`send_email.delay(...)` returns at once; a task worker (here started in a thread of this script, in
real life `asyncflow task-worker serve` or `python -m asyncflow.task_worker delay_task:send_email` in
another process or on another machine) runs the work, and the future resolves from anywhere.
"""
import threading

from asyncflow import task
from asyncflow.task_worker import TaskWorker


@task
def send_email(to: str, subject: str):
    # send email...
    return f"sent {subject!r} to {to}"


if __name__ == "__main__":
    future = send_email.delay("user@example.com", "Welcome!")  # returns immediately
    print(f"delayed task run {future.task_run_id}: {future.state!r}")

    import anyio

    worker = TaskWorker(send_email, limit=10)
    thread = threading.Thread(target=anyio.run, args=(worker.start,), daemon=True)
    thread.start()
    print(future.result(timeout=30))
    worker.stop()
    thread.join(10)
