"""The optional job callback: when a job ends, its status is POSTed to the URL given with the
job (headers stored encrypted), through the guarded HTTP request of heron.delivery. One attempt
for now; the pipeline issue moves this onto the durable outbox with its retries."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from heron.db.engine import Database
from heron.delivery.http import HttpResult, send
from heron.delivery.ssrf import IPNetwork
from heron.jobs.engine import JobReport, report
from heron.jobs.models import Job
from heron.keys import Keyring

log = logging.getLogger("heron.jobs")

HEADERS_PURPOSE = "job.callback_headers"


def status_body(rep: JobReport) -> dict[str, Any]:
    """The Senet task-status shape, with the job's reqId."""
    return {
        "reqId": rep.job.req_id,
        "state": rep.job.state,
        "result": {"status": rep.summary or "", "msgs": rep.messages, "stats": rep.stats},
        "pctDone": rep.pct_done,
    }


def encrypt_headers(keyring: Keyring, headers: dict[str, str]) -> str | None:
    return keyring.encrypt(json.dumps(headers).encode(), HEADERS_PURPOSE) if headers else None


def callback_hook(
    db: Database, keyring: Keyring, allow: tuple[IPNetwork, ...], timeout: float = 10.0
) -> Callable[[int], None]:
    def deliver(job_id: int) -> None:
        with db.read() as session:
            job = session.get(Job, job_id)
            if job is None or not job.callback_url:
                return
            body = orjson.dumps(status_body(report(session, job)))
            url, sealed = job.callback_url, job.callback_headers
        headers = json.loads(keyring.decrypt(sealed, HEADERS_PURPOSE)) if sealed else {}
        headers["content-type"] = "application/json"

        async def post() -> HttpResult:
            async with httpx.AsyncClient() as client:
                return await send(client, "POST", url, headers=headers, content=body, allow=allow, timeout=timeout)

        result = asyncio.run(post())
        log.info("jobs.callback", extra={"job_id": job_id, "status": result.status, "error": result.error})

    return deliver
