"""Seed: tasks docs, "Task configuration" — a task with a `name` and a `description`.

The seed only defines the task; here a flow calls it, and the script prints the task's metadata.
"""
from asyncflow import flow, task


@task(name="hello-task", description="This task says hello.")
def my_task():
    print("Hello, I'm a task")


@flow(log_prints=True)
def my_flow():
    my_task()


if __name__ == "__main__":
    my_flow()
    print(f"task name: {my_task.name}; description: {my_task.description}")
