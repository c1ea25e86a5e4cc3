"""Seed: tasks concepts page, "Calling a task directly (__call__)" — a direct call blocks and returns the result.

The seed only assigns the result; this variant also prints it.
"""
from asyncflow import task

@task
def add_integers(a: int, b: int) -> int:
    return a + b

if __name__ == "__main__":
    result = add_integers(1, 2)  # blocks until complete, returns 3
    print(f"add_integers(1, 2) = {result}")
