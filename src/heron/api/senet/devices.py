"""/rest/integration/device: Senet device onboarding (register, activate, activateOne,
deactivate, update, status)."""

from __future__ import annotations

from fastapi import APIRouter

from heron.api.senet import PREFIX

router = APIRouter(prefix=PREFIX + "/device", tags=["senet onboarding"])
