"""Seed: tasks concepts page (top) — `explain_tasks`, a task with `log_prints=True` called outside a flow."""
from asyncflow import task

@task(log_prints=True)
def explain_tasks():
    print("run any python code here!")
    print("but maybe just a little bit")

if __name__ == "__main__":
    explain_tasks()
