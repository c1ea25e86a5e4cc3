"""Seed: tasks docs, "Tags" — tags added at call time with the `tags` context manager.

The task also prints its run's tags, to show that the context's tag reached the run.
"""
from asyncflow import flow, task
from asyncflow import tags
from asyncflow.runtime import task_run


@task
def my_task():
    print("Hello, I'm a task")
    print(f"task run tags: {sorted(task_run.tags)}")


@flow
def my_flow():
    with tags("test"):
        my_task()


if __name__ == "__main__":
    my_flow()
