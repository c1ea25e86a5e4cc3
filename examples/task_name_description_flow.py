"""Seed: flow and task configuration tutorial, "Basic task configuration" — a task `name` and
`description`, called from a flow.

The seed's task body is only a comment ("do some work"); this variant fills it with a print.
"""
from asyncflow import flow, task

@task(name="My Example Task", 
      description="An example task for a tutorial.")
def my_task():
    # do some work
    print("doing some work")

@flow
def my_flow():
    my_task()

if __name__ == "__main__":
    my_flow()
    print(f"task name: {my_task.name}; description: {my_task.description}")
