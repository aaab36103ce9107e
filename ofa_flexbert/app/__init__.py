"""The application: the stages the command line runs (``stages``), the console, reports, plots, the demo.

The top of the import ladder: nothing below imports from here (docs/design.md).
"""
