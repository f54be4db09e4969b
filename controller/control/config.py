"""The ``control:`` section of config.yaml: confirmation, safety and the audit log."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RateLimitConfig(_Strict):
    """Commands each API key may send: a token bucket."""

    commands_per_minute: float = Field(default=30.0, gt=0)
    burst: int = Field(default=10, ge=1)


class ControlConfig(_Strict):
    """How commands are confirmed and guarded."""

    #: A target that has not read back its new state this long after the write fails.
    confirm_timeout: float = Field(default=10.0, gt=0, le=600)
    #: Pause between read-backs of a target that has not yet confirmed.
    confirm_interval: float = Field(default=0.5, gt=0, le=60)
    #: A switch-off that puts out more lamps than this needs ``confirm: true``.
    confirm_above_lamps: int = Field(default=100, ge=0)
    rate_limit: RateLimitConfig = RateLimitConfig()
    #: The audit log and the manual overrides (SQLite), relative to config.yaml.
    db_path: str = "control.db"
    #: Finished commands kept in memory for the API (all stay in the audit log).
    keep_commands: int = Field(default=1000, ge=10)
