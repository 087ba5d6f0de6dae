"""The Senet task status named by the application EUI, as the seed's statusUrl examples show it
(`reqId=DevMgmtJobReq:00000000000100E0`): a client building the URL from its AppEUI gets the
application's latest task of that family; Heron's own reqIds keep working; access as before."""

from __future__ import annotations

from datetime import timedelta

from httpx import Response
from sqlalchemy import update

from heron.db.base import utcnow
from heron.jobs.models import Job
from tests.api.test_senet_onboarding import APP_EUI, BASE, DEVICE, SENET_HOST, App, app, seed_examples, settings
from tests.registry.conftest import Api, device_type_body

__all__ = ["app", "settings"]  # fixtures imported for this module's tests

MGMT, UPD = f"DevMgmtJobReq:{APP_EUI}", f"DevUpdateJobReq:{APP_EUI}"


def _req_id(answer: Response) -> str:
    return str(answer.json()["statusUrl"].split("reqId=")[1])


def test_the_seeds_status_example_unchanged_answers_the_applications_latest_task(app: App) -> None:
    ex = seed_examples()["status"]
    app.wait(app.post("activate", f"appEui={APP_EUI}", {"data": [{"devEui": "1230000000000ABC"}]}))
    headers = {k: (app.key.secret if v.startswith("<API") else v) for k, v in ex.headers.items()}
    r = app.client.get(ex.url.replace(SENET_HOST, BASE), headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == ex.response


def test_app_eui_req_ids_follow_the_latest_task_of_their_family_and_own_ids_keep_working(app: App) -> None:
    assert app.status(MGMT).status_code == 404  # no task yet
    rows = [{"devEui": "0A00000012000001", "appKey": "0ABCDEF0120000010A00000012000001"}]
    registered = app.post("register", f"appEui={APP_EUI}&token={app.token()}", {"data": rows})
    app.wait(registered)
    assert app.status(UPD).status_code == 404  # an update task is of the other family
    updated = app.post("update", f"appEui={APP_EUI}", {"data": [{"devEui": "0A00000012000001", "lat": 1.5}]})
    app.wait(updated)
    assert app.status(MGMT).json()["result"]["stats"]["registered"] == 1
    assert app.status(UPD).json()["result"]["stats"]["updated"] == 1
    deactivated = app.post("deactivate", f"appEui={APP_EUI}", {"data": [{"devEui": "0A00000012000001"}]})
    app.wait(deactivated)
    assert app.status(MGMT).json()["result"]["stats"]["deactivated"] == 1
    assert app.status(f"DevMgmtJobReq:{APP_EUI.lower()}").json() == app.status(MGMT).json()
    # Heron's own ids still name their own task.
    assert app.status(_req_id(registered)).json()["result"]["stats"]["registered"] == 1
    assert app.status(_req_id(updated)).json()["result"]["stats"]["updated"] == 1


def test_app_eui_req_ids_keep_the_access_rules_and_the_15_minutes(app: App) -> None:
    answer = app.post("deactivate", f"appEui={APP_EUI}", {"data": [{"devEui": "0A00000012000001"}]})
    app.wait(answer)
    assert app.status(MGMT, key=app.tenants.a_reader).status_code == 200  # a reader of the group may
    other = app.status(MGMT, key=app.tenants.b_admin)
    assert other.status_code == 403
    assert other.json() == {"message": "The API key is not authorized to get the status of the task."}
    # Another application (Customer B's) without a task, and an EUI naming none: unknown.
    Api(app.client, app.tenants.b_admin).create(
        "/device-types", device_type_body(app.tenants.customer_b, network="LORAWAN", appEui="70B3D57ED00000B0")
    )
    for req_id in ("DevMgmtJobReq:70B3D57ED00000B0", "DevMgmtJobReq:70B3D57ED00000FF"):
        r = app.status(req_id)
        assert r.status_code == 404 and r.json() == {"message": "No task could be found with the requested reqId."}
    with app.db.write() as s:
        s.execute(update(Job).where(Job.req_id == _req_id(answer)).values(ended_at=utcnow() - timedelta(minutes=16)))
    assert app.status(MGMT).status_code == 404
    assert app.client.get(f"{DEVICE}/status", params={"reqId": MGMT}).status_code == 403  # no key
