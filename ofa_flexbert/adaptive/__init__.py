"""Adaptive inference: an inference setting (``setting``) run on a backbone with its gates and
off-ramps (``runner``), the confidence cascade of static subnets (``cascade``), what an input costs
on a dynamic route in MACs (``cost``) and what a setting's graph calls cost in milliseconds from a
measured table (``latency``), and the search's pure accuracy-cost rules (``tradeoff``).  The gates
and off-ramps themselves live in the top-level ``gate/`` package.
"""
