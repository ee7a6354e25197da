"""The one exception type for a user's mistake that no built-in type names better."""


class UserError(ValueError):
    """An error caused by the user's input (a bad option, a file of the wrong kind): the command
    line prints it as one line, without a traceback, and exits with status 2."""
