"""The GLUE tasks: the task table (``tasks``, no framework), readers and batching (``data``), metrics.

Swappable as a unit: nothing here knows about subnets, stages or any file but the task data.
"""
