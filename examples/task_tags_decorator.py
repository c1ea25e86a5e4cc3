"""Seed: tasks docs, "Tags" — tags given on the task decorator.

The seed only defines the task; here a flow calls it and the task prints its run's tags.
"""
from asyncflow import flow, task
from asyncflow.runtime import task_run


@task(name="hello-task", tags=["test"])
def my_task():
    print("Hello, I'm a task")
    print(f"task run tags: {sorted(task_run.tags)}")


@flow
def my_flow():
    my_task()


if __name__ == "__main__":
    my_flow()
