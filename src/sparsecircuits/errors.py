"""One exception type for bad user input.

The CLI turns a ``UserError`` into one line on stderr and exit code 2, with no
traceback; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a wrong path, a malformed config, an unknown task."""
