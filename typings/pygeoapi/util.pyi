from enum import Enum

DATETIME_FORMAT: str

class RequestedProcessExecutionMode(Enum):
    wait = "wait"
    respond_async = "respond-async"

class RequestedResponse(Enum):
    raw = "raw"
    document = "document"

class JobStatus(Enum):
    accepted = "accepted"
    running = "running"
    successful = "successful"
    failed = "failed"
    dismissed = "dismissed"
