"""Every tunable of the intake API in one validated, immutable object."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

MIB = 1024 * 1024


class IntakeSettings(BaseModel):
    """Settings of one intake service.

    Attributes:
        uploads_dir: Where uploaded files are kept (`<uploads_dir>/<source>/<sha256>.<ext>`).
        keys_file: The hashed API keys file (intake keys carry the sources they may deliver).
        require_keys: Refuse requests to deliver without a valid intake key (401) or with a key
            not allowed for the source (403).
        keys_reload_interval_s: Longest time a change to the keys file goes unnoticed.
        max_request_bytes: Largest events request body (413 past it).
        max_rows: Most records in one events request (413 past it).
        max_upload_bytes: Largest uploaded file (413 as soon as the body passes it).
        publish_batch_rows: Records of an upload published (and awaited) together.
        body_idle_timeout_s: Longest pause between two parts of a request body (408 past it), so
            a client that stalls mid-body cannot hold a request open.
        nats_url: The broker's address(es); None reads `CHURNOPS_NATS_URL` or the local default.
        connect_timeout_s: Longest wait for the broker before a request gets 503.
        ack_timeout_s: Longest wait for the broker's acknowledgement of a record.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    uploads_dir: Path
    keys_file: Path | None = None
    require_keys: bool = True
    keys_reload_interval_s: float = Field(default=1.0, ge=0, le=60)
    max_request_bytes: int = Field(default=4 * MIB, ge=1)
    max_rows: int = Field(default=10_000, ge=1)
    max_upload_bytes: int = Field(default=256 * MIB, ge=1)
    publish_batch_rows: int = Field(default=1000, ge=1, le=100_000)
    body_idle_timeout_s: float = Field(default=30.0, gt=0)
    nats_url: str | None = None
    connect_timeout_s: float = Field(default=2.0, gt=0)
    ack_timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> IntakeSettings:
        if self.require_keys and self.keys_file is None:
            raise ValueError("require_keys is on but no keys_file is set")
        return self
