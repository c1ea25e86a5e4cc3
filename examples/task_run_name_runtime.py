"""Seed: tasks docs, "Task configuration" — a `task_run_name` function that reads `asyncflow.runtime`.

The seed imports only `flow` (but uses `task`) and never runs the flow; this variant imports both and
runs it.
"""
from asyncflow import flow, task
from asyncflow.runtime import flow_run, task_run


def generate_task_name():
    flow_name = flow_run.flow_name
    task_name = task_run.task_name

    parameters = task_run.parameters
    name = parameters["name"]
    limit = parameters["limit"]

    return f"{flow_name}-{task_name}-with-{name}-and-{limit}"


@task(name="my-example-task",
      description="An example task for a tutorial.",
      task_run_name=generate_task_name)
def my_task(name: str, limit: int = 100):
    pass


@flow
def my_flow(name: str):
    # creates a run with a name like "my-flow-my-example-task-with-marvin-and-100"
    my_task(name="marvin")


if __name__ == "__main__":
    my_flow(name="marvin")
