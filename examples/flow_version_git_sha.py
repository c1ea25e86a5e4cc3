"""Seed: flow and task configuration tutorial, "Basic flow configuration" — the git commit as the version.

The version comes from the GIT_COMMIT_SHA environment variable (None when it is not set). The seed's
body is only a comment; this variant fills it with a print and runs the flow.
"""
import os
from asyncflow import flow

@flow(name="My Example Flow", 
      description="An example flow for a tutorial.",
      version=os.getenv("GIT_COMMIT_SHA"))
def my_flow():
    # run tasks and subflows
    print("running 'My Example Flow'")

if __name__ == "__main__":
    my_flow()
    print(f"flow version: {my_flow.version}")
