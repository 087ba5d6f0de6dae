"""Settings, read once from `HERON_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERON_", extra="ignore")

    data_dir: Path = Path("./var")
    database_url: str = ""  # empty = SQLite file `<data_dir>/heron.db`
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    workers: int = 1
    # The UDP form of the base-station ingest (docs/INGEST.md, "Over UDP"): 0 = off; the host
    # defaults to http_host.
    ingest_udp_port: int = Field(default=0, ge=0, le=65535)
    ingest_udp_host: str | None = None
    public_url: str | None = None  # base of every absolute URL Heron writes; default: from the request

    admin_email: str | None = None
    admin_password: SecretStr | None = None

    # Key-encryption key for root keys and callback secrets: base64 of 32 bytes, or a
    # comma-separated keyring of them (the last one encrypts). Else read from kek_file.
    kek: SecretStr | None = None
    kek_file: Path | None = None  # default `<data_dir>/keys/kek`
    session_secret_file: Path | None = None  # default `<data_dir>/keys/session`

    # Per-credential rate limit on the APIs, requests per second (0 = off) and burst size.
    rate_limit_per_second: float = 0.0
    rate_limit_burst: int = 0

    login_max_failures: int = Field(default=5, ge=1)
    login_lockout_seconds: int = Field(default=900, ge=1)
    session_max_age_seconds: int = 12 * 3600
    api_user_last_used_flush_seconds: float = 30.0

    # Callback and job-callback URLs never reach loopback, private, link-local or metadata
    # addresses; this comma-separated CIDR list opens specific ranges (link-local never).
    callback_allow_cidrs: str = ""

    # Finished jobs stay readable (GET /api/v2/jobs) this long; Senet's `status` answers for 15
    # minutes after the end, as the Senet API documents, whatever this says.
    job_retention_days: int = Field(default=30, ge=1)
    # A running job whose runner stopped beating this long is taken over by another runner.
    job_stale_seconds: float = Field(default=15.0, gt=0)
    # Whether this process runs jobs. Every server does by default; a scaled-out deployment may
    # keep API processes free of job work and run jobs in others.
    run_jobs: bool = True
    # Deleted devices can be restored this long, then they are purged for good.
    deleted_device_retention_days: int = Field(default=30, ge=1)
    # How often each process renews or releases tokens that reached their end, and purges.
    maintenance_interval_seconds: float = Field(default=60.0, gt=0)
    # A base station heard nothing this long is marked OFFLINE (a STATION_OFFLINE event).
    station_offline_seconds: float = Field(default=3600.0, gt=0)

    # Message pipeline. Receptions of one (device, sequence number) arriving within the dedup
    # window become one message, delivered by the DATA callbacks when the window closes; later
    # ones, up to the horizon, attach to it as late receptions (DATA_ADVANCED).
    dedup_window_seconds: float = Field(default=1.0, gt=0, le=30)
    dedup_horizon_seconds: float = Field(default=30.0, gt=0, le=600)
    # The uplink writer remembers the devices it stored within the horizon so dedup needs no
    # query (about 1 kB each, docs/ARCHITECTURE.md "Message pipeline"); beyond this many, the
    # least recently heard are forgotten and read from the database again when they are heard.
    uplink_recent_devices: int = Field(default=1_000_000, ge=0)

    # Callback delivery: failed requests are retried with exponential backoff (base x 2^n, capped)
    # until they are this old, then recorded as not delivered.
    delivery_backoff_base_seconds: float = Field(default=10.0, gt=0)
    delivery_backoff_max_seconds: float = Field(default=1800.0, gt=0)
    delivery_give_up_hours: float = Field(default=48.0, ge=24)
    run_deliveries: bool = True
    # `heron serve` runs the deliveries and downlink decisions in a worker process of its own
    # (heron.runtime.worker), at a lower CPU priority than the API; false: in the API processes' threads.
    delivery_process: bool = True
    # `heron serve` runs the uplink writer in a process of its own (heron.uplink.process) and
    # sets `uplink_socket` for its API processes, which store through it; false: each API
    # process writes in a thread of its own.
    uplink_process: bool = True
    uplink_socket: Path | None = None
    # `heron serve` restarts a child process that died after this many seconds, doubled at each
    # death in a row up to the max (a child that ran a while starts again from the first).
    child_restart_backoff_seconds: float = Field(default=0.5, gt=0, le=60)
    child_restart_backoff_max_seconds: float = Field(default=5.0, gt=0, le=300)
    # Set by `heron serve` for its API processes: the file where it keeps its children's state
    # (heron.runtime.processes.Supervisor), read by /api/ready and /metrics.
    children_status_file: Path | None = None
    # A callback's pending deliveries beyond this many (the oldest) are recorded as failed
    # ("outbox overflow") and alerted, as are pending ones older than the give-up age.
    outbox_max_pending_per_callback: int = Field(default=1_000_000, ge=1)
    # SMTP server of EMAIL callbacks and of the device types' alert mails (none: host empty).
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "heron@localhost"
    smtp_starttls: bool = True
    # A downlink callback (BIDIR) must answer within this; later means no downlink.
    downlink_answer_timeout_seconds: float = Field(default=10.0, gt=0, le=15)

    # Service prediction (/coverages, docs/ARCHITECTURE.md "Service prediction"): the
    # Okumura-Hata model's environment (urban, suburban, open); the antenna height (m above
    # ground) and gain (dBi, net of cable loss) of a station that has none of its own; the
    # device's height; the distance beyond which a station never counts; the most points a
    # grid may ask for.
    coverage_environment: Literal["urban", "suburban", "open"] = "suburban"
    coverage_station_height_m: float = Field(default=30.0, ge=1, le=500)
    coverage_station_gain_dbi: float = Field(default=5.0, ge=-10, le=30)
    coverage_device_height_m: float = Field(default=1.5, ge=0.5, le=10)
    coverage_max_range_km: float = Field(default=100.0, gt=0, le=1000)
    coverage_grid_max_points: int = Field(default=250_000, ge=1, le=10_000_000)

    log_level: str = "INFO"
    access_log: bool = True

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'heron.db').as_posix()}"

    @property
    def resolved_kek_file(self) -> Path:
        return self.kek_file or self.data_dir / "keys" / "kek"

    @property
    def resolved_session_secret_file(self) -> Path:
        return self.session_secret_file or self.data_dir / "keys" / "session"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
