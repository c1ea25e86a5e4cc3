"""Seed: flow and task configuration tutorial, "Basic flow configuration" — the docstring as description.

The seed's body is only a docstring and a comment; this variant adds a print and runs the flow.
"""
from asyncflow import flow

@flow(name="My Example Flow")
def my_flow():
    """An example flow for a tutorial."""
    # run tasks and subflows
    print("running 'My Example Flow'")

if __name__ == "__main__":
    my_flow()
    print(f"flow description: {my_flow.description}")
