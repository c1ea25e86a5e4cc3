"""Seed: tasks docs, "Synchronous functions" — a sync task called outside any flow."""
from asyncflow import task


@task
def print_message():
    print("Hello, I'm a task")


if __name__ == "__main__":
    print_message()
