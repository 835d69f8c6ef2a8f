"""Job execution settings, env prefix GIS_JOBS_ (split from gis.settings by concern)."""

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class JobSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GIS_JOBS_", extra="ignore")

    in_service: bool = Field(
        default=True,
        description="Whether each service process also runs queued jobs (one process needs no `gis worker`: "
                    "`make run`). Off on service nodes of a deployment whose `gis worker` processes run them.")
    concurrency: int = Field(default=2, ge=1, le=32, description="Jobs one worker process runs at once.")
    heartbeat_seconds: float = Field(default=3.0, gt=0, description="How often a running job's heartbeat is stamped.")
    stale_seconds: float = Field(
        default=15.0, gt=0,
        description="A running job whose heartbeat is older than this has lost its worker: it is resumed or "
                    "failed (within this time plus one poll).")
    max_attempts: int = Field(
        default=2, ge=1,
        description="Runs an asynchronous job gets: a job whose worker died is run again until this many "
                    "runs have started, then failed with the reason.")
    poll_seconds: float = Field(default=0.5, gt=0, description="How often an idle worker looks for queued jobs.")

    @model_validator(mode="after")
    def _heartbeat_inside_stale(self) -> "JobSettings":
        if self.heartbeat_seconds * 2 > self.stale_seconds:
            raise ValueError("GIS_JOBS_STALE_SECONDS must be at least twice GIS_JOBS_HEARTBEAT_SECONDS")
        return self
