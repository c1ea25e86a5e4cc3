"""Seed: tasks concepts page, "Submitting a task (.submit())" — `.submit()` returns a future at once.

The seed only defines the flow; this variant runs it and prints the result.
"""
from asyncflow import flow, task

@task
def add_integers(a: int, b: int) -> int:
    return a + b

@flow(log_prints=True)
def my_flow():
    future = add_integers.submit(1, 2)  # returns immediately
    # do other work...
    result = future.result()  # blocks until complete, returns 3
    print(f"future.result() = {result}")

if __name__ == "__main__":
    my_flow()
