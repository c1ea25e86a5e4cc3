"""Seed: flow and task configuration tutorial, "Basic task configuration" — task `tags`.

The seed's task body is only a comment ("do some work"); this variant prints the run's tags.
"""
from asyncflow import flow, task
from asyncflow.runtime import task_run

@task(name="My Example Task", 
      description="An example task for a tutorial.",
      tags=["tutorial","tag-test"])
def my_task():
    # do some work
    print(f"task run tags: {sorted(task_run.tags)}")

@flow
def my_flow():
    my_task()

if __name__ == "__main__":
    my_flow()
