"""``run_ofa_glue.py serve``: an HTTP service for an export directory (static, cascade or dynamic).

``batcher`` merges concurrent requests into runtime batches on one worker thread, ``metrics`` counts
what the service did (Prometheus text), ``api`` is the FastAPI application (validation, endpoints),
``server`` opens the socket and runs uvicorn.  Nothing here trains or imports paddleslim.
"""
