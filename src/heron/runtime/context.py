"""A process's context: the database, keys and the parts that run in it (job runner, uplink
writer or its client, delivery worker, downlink decider), built once from the settings. The
API processes, `heron worker` and the tools build theirs here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from heron.api.ratelimit import RateLimiter
from heron.bootstrap import Prepared
from heron.config import Settings
from heron.db.engine import Database
from heron.delivery.channels.email import SmtpConfig
from heron.delivery.policy import Policy
from heron.delivery.ssrf import parse_allow_cidrs
from heron.delivery.worker import DeliveryWorker
from heron.downlink.decider import DownlinkDecider
from heron.jobs.engine import JobRunner
from heron.jobs.notify import finishing_hook
from heron.keys import Keyring
from heron.network.sigfox.radio import NETWORK as SIGFOX
from heron.radio import Network
from heron.registry import maintenance
from heron.runtime.job_kinds import register_job_kinds
from heron.tenancy.auth import Authenticator
from heron.uplink.process import RemoteUplinks
from heron.uplink.writer import Uplinks, UplinkWriter

# The radio networks this build serves (heron.radio.Network).
NETWORKS: tuple[Network, ...] = (SIGFOX,)


@dataclass
class AppContext:
    settings: Settings
    db: Database
    keyring: Keyring
    session_secret: bytes
    authenticator: Authenticator
    jobs: JobRunner
    uplinks: Uplinks
    deliveries: DeliveryWorker
    downlinks: DownlinkDecider
    rate_limiter: RateLimiter = field(default_factory=RateLimiter)


def build_context(settings: Settings, prepared: Prepared) -> AppContext:
    register_job_kinds()
    allow = parse_allow_cidrs(settings.callback_allow_cidrs)
    deliveries = DeliveryWorker(
        prepared.db,
        prepared.keyring,
        allow=allow,
        policy=Policy(
            backoff_base=timedelta(seconds=settings.delivery_backoff_base_seconds),
            backoff_max=timedelta(seconds=settings.delivery_backoff_max_seconds),
            give_up=timedelta(hours=settings.delivery_give_up_hours),
            max_pending_per_callback=settings.outbox_max_pending_per_callback,
        ),
        smtp=SmtpConfig.from_settings(settings),
    )
    runner = JobRunner(
        prepared.db,
        keyring=prepared.keyring,
        stale_after=settings.job_stale_seconds,
        retention=timedelta(days=settings.job_retention_days),
        finishing=[finishing_hook()],
        on_finished=[lambda _job_id: deliveries.wake()],
        periodic=maintenance.periodic_tasks(
            settings.maintenance_interval_seconds,
            timedelta(days=settings.deleted_device_retention_days),
            timedelta(seconds=settings.station_offline_seconds),
        ),
    )
    downlink_decider = DownlinkDecider(
        prepared.db,
        prepared.keyring,
        dedup_window=timedelta(seconds=settings.dedup_window_seconds),
        networks=NETWORKS,
        allow=allow,
        answer_timeout=settings.downlink_answer_timeout_seconds,
    )
    return AppContext(
        settings=settings,
        db=prepared.db,
        keyring=prepared.keyring,
        session_secret=prepared.session_secret,
        authenticator=Authenticator(prepared.db, settings.api_user_last_used_flush_seconds),
        jobs=runner,
        uplinks=_uplinks(settings, prepared),
        downlinks=downlink_decider,
        deliveries=deliveries,
    )


def _uplinks(settings: Settings, prepared: Prepared) -> Uplinks:
    """Through the uplink writer process when `heron serve` started one, else a thread here."""
    if settings.uplink_socket is not None:
        return RemoteUplinks(settings.uplink_socket)
    return UplinkWriter(
        prepared.db,
        dedup_window=timedelta(seconds=settings.dedup_window_seconds),
        horizon=timedelta(seconds=settings.dedup_horizon_seconds),
        recent_devices=settings.uplink_recent_devices,
    )
