"""Training: the one loop (``loop``) with a strategy per stage, evaluation, the exact-resume checkpoint,
data parallel, the PaddleSlim supernet, neural grafting and the depth diagnostics.
"""
