"""Typed domain errors. services/common/errors.py maps them to HTTP statuses once; the CLI prints their text."""


class GisError(Exception):
    """Base of every error the library raises on purpose, with a message meant for a person."""


class ConfigError(GisError):
    """The project's own configuration (a layer file, a setting) is wrong."""


class DatabaseError(GisError):
    """The database cannot be started, reached or used."""


class InvalidInput(GisError):
    """Input a caller sent that cannot be used (a query parameter, a process input, a proposal, a header);
    `parameter` names which, `problem` says why. services/ answers it with a 400 naming the parameter."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter}: {problem}")
        self.parameter = parameter
        self.problem = problem


class NotFound(GisError):
    """A layer, feature or job that does not exist (or that the caller may not know exists)."""


class SourceError(GisError):
    """A delivered source file cannot be read or does not match its layer."""


class ValidationFailed(SourceError):
    """Some source rows break the layer's rules; the rejects file lists them."""

    def __init__(self, message: str, rejects_path: str | None = None) -> None:
        super().__init__(message)
        self.rejects_path = rejects_path
