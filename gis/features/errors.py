"""The one error a feature query raises for bad client input: it names the parameter at fault.

services/ turns it into a 400 with an OGC exception body; nothing here knows about HTTP.
"""

from gis.errors import GisError


class InvalidQuery(GisError):
    """A request parameter (bbox, datetime, filter, ...) that cannot be understood or is not allowed."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter}: {problem}")
        self.parameter = parameter
        self.problem = problem
