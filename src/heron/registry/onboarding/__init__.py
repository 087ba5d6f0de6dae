"""The Senet onboarding API as jobs of the one job engine: `register`, `activate`,
`deactivate`, `update` (and `activateOne`, the activation of one device inside the request).

A call is checked and its rows are validated, normalized and sealed at submission (in the
request, where the caller's rights are known): each stored row is either a clean row (DevEUI
upper-case, the AppKey already a keyring ciphertext, so no root key ever sits in clear in
`job_inputs`) or the error message it will report. What a handler needs later in the runner
thread (the application, the contract, the caller's read scopes) goes into the job's params.
Handlers are set-based: one SELECT ... IN per batch, one executemany per kind of write, tokens
taken for a whole batch at once (`bulk.reserve_tokens`).

Rules (docs/ARCHITECTURE.md, "Senet onboarding API"):
- A LoRaWAN device takes its token on activation: on `contractId` if given (one of the
  application's contracts), else the contract named at registration, else the application's
  default contract; with none left the row fails with a message naming the contract.
- Deactivation keeps the token of a device that has been heard (it may go on uplinking on its
  session and stays billable, as the seed says) and releases the token of one never heard.
- Changing an AppKey (through `register` on a device already in the application, or `activate`
  with an `appKey`) needs a valid registration token; messages show keys masked (`****ABC0`).

Modules: `calls` (the application and the call's parameters), `rows` (the stored rows),
`submission` (storing a job; `activateOne`), `handlers` (the job kinds' batch handlers),
`status` (the task status).
"""

from heron.registry.onboarding.calls import (
    ACTIVATE,
    DEACTIVATE,
    KINDS,
    MAX_ROWS,
    MGMT_PREFIX,
    REGISTER,
    UPDATE,
    UPDATE_PREFIX,
    Application,
    Call,
    check_call,
    invalid,
)
from heron.registry.onboarding.handlers import BATCH_SIZE, JOB_KINDS
from heron.registry.onboarding.rows import ERROR, EUI, SEALED_APP_KEY
from heron.registry.onboarding.status import task_status
from heron.registry.onboarding.submission import Callback, activate_one, prepare_submit

__all__ = [
    "ACTIVATE",
    "BATCH_SIZE",
    "DEACTIVATE",
    "ERROR",
    "EUI",
    "JOB_KINDS",
    "KINDS",
    "MAX_ROWS",
    "MGMT_PREFIX",
    "REGISTER",
    "SEALED_APP_KEY",
    "UPDATE",
    "UPDATE_PREFIX",
    "Application",
    "Call",
    "Callback",
    "activate_one",
    "check_call",
    "invalid",
    "prepare_submit",
    "task_status",
]
