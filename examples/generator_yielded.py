"""Seed: tasks docs, "Generator functions are consumed when returned from tasks" (second example) — a task
that *yields* a generator hands it over unconsumed."""
from asyncflow import task


def gen():
    yield from [1, 2, 3]
    print('Generator consumed!')


@task
def f():
    yield gen()


generator = next(f())
print("got the generator; consuming it now")
values = list(generator) # prints 'Generator consumed!'
print(f"values: {values}")
