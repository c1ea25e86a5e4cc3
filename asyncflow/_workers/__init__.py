"""Background tasks: `.delay()`, brokers, task workers."""
