"""Seed: flow and task configuration tutorial, "Task input hash" — `cache_key_fn=task_input_hash`.

The seed runs `hello_flow` interactively: "Marvin", "Marvin" again (a cache hit: the task does not print),
then "Trillian" (new input, the task runs). This script does the same three calls in one process.
"""
from asyncflow import flow, task
from asyncflow.tasks import task_input_hash
from datetime import timedelta

@task(cache_key_fn=task_input_hash, cache_expiration=timedelta(minutes=1))
def hello_task(name_input):
    # Doing some work
    print(f"Saying hello {name_input}")
    return "hello " + name_input

@flow
def hello_flow(name_input):
    hello_task(name_input)

if __name__ == "__main__":
    hello_flow("Marvin")
    hello_flow("Marvin")
    hello_flow("Trillian")
