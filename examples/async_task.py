"""Seed: tasks docs, "Asynchronous functions" — an async task run with asyncio.run (sleep shortened 1 s -> 0.1 s)."""
from asyncflow import task
import asyncio


@task
async def print_message():
    await asyncio.sleep(0.1)
    print("Hello, I'm an async task")


asyncio.run(print_message())
