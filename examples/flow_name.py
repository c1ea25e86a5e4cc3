"""Seed: flow and task configuration tutorial, "Basic flow configuration" — a flow `name`.

The seed's body is only a comment ("run tasks and subflows"); this variant fills it with a print and
runs the flow.
"""
from asyncflow import flow

@flow(name="My Example Flow")
def my_flow():
    # run tasks and subflows
    print("running 'My Example Flow'")

if __name__ == "__main__":
    my_flow()
    print(f"flow name: {my_flow.name}")
