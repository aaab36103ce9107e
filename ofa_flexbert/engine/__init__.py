"""The engine: the routed encoder forward every subnet, route, gate decision and exit runs through,
its pure rules (widths, depths, routes: ``routes``; MACs: ``accounting``) and the losses on its outputs.

Imports nothing of ofa_flexbert but ``errors`` and ``glue.tasks``; ``routes`` and ``accounting`` import
no framework.
"""
