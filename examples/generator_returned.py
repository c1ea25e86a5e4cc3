"""Seed: tasks docs, "Generator functions are consumed when returned from tasks" — a task that *returns*
a generator has it consumed into a list."""
from asyncflow import task


def gen():
    yield from [1, 2, 3]
    print('Generator consumed!')


@task
def f():
    return gen()


result = f()  # prints 'Generator consumed!'
print(f"f() returned {result!r}")
