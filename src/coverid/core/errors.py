"""Errors the user can act on: the CLI and stages print them as one line, no traceback."""


class CoveridError(Exception):
    """A problem with the user's input or environment, reported as one line."""


class BadInputError(CoveridError):
    """A file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")
