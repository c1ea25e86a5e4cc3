"""Seed: tasks docs, "Generators" — a generator task whose yielded values feed another task."""
from asyncflow import task


@task
def generator():
    for i in range(10):
        yield i


@task
def consumer(x):
    print(x)


for val in generator():
    consumer(val)
