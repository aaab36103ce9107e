"""The one exception type that means "the user gave us bad input".

The CLI catches :class:`UserError`, prints its message on one line and exits with
code 2; anything else is a bug and keeps its traceback.  Messages name the file
(and line), the flag, or the value that is wrong, and what was expected.
"""


class UserError(Exception):
    """Bad input from the user: a one-line, actionable message (exit code 2)."""

    exit_code = 2
