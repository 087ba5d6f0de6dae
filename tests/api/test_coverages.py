"""Service prediction through the HTTP API (/api/v2/coverages): margins per device class,
redundancy, the map grid, the bulk job, which stations count, and what a customer may learn."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from heron.db.base import utcnow
from heron.runtime.context import AppContext
from tests.api.test_bad_input import assert_invalid, assert_message, unchanged
from tests.conftest import Credential, Tenants

API = "/api/v2"
COV = API + "/coverages"
HOME = (45.0, 4.0)  # a station of the operator stands here in most tests
KM_LAT = 1 / 111.195  # degrees of latitude per km


def station(
    client: TestClient, who: Credential, group_id: int, ident: str, lat: float | None, lng: float | None, **extra: Any
) -> dict[str, str]:
    body: dict[str, Any] = {"id": ident, "groupId": str(group_id), "name": f"Station {ident}"} | extra
    if lat is not None:
        body |= {"lat": lat, "lng": lng}
    r = client.post(f"{API}/base-stations", json=body, headers=who.headers)
    assert r.status_code == 201, r.text
    made: dict[str, str] = r.json()
    return made


def predict(client: TestClient, who: Credential, lat: float, lng: float, **query: Any) -> dict[str, Any]:
    r = client.get(f"{COV}/global/predictions", params={"lat": lat, "lng": lng} | query, headers=who.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def redundancy(client: TestClient, who: Credential, lat: float, lng: float, **query: Any) -> int:
    r = client.get(f"{COV}/operators/redundancy", params={"lat": lat, "lng": lng} | query, headers=who.headers)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"redundancy"}
    value: int = r.json()["redundancy"]
    return value


def class_margins(answer: dict[str, Any]) -> dict[str, list[int]]:
    return {c["name"]: c["margins"] for c in answer["deviceClasses"]}


def test_point_next_to_a_station_is_covered_with_more_margin_for_class_0u_than_3u(
    client: TestClient, tenants: Tenants
) -> None:
    station(client, tenants.root_admin, tenants.operator, "C01", *HOME)
    answer = predict(client, tenants.a_admin, HOME[0] + 0.5 * KM_LAT, HOME[1])
    assert set(answer) == {"locationCovered", "margins", "deviceClasses"}
    assert answer["locationCovered"] is True
    best, second, third = answer["margins"]
    assert best > 0 and second == third == 0  # one station: no redundancy levels 2 and 3
    per_class = class_margins(answer)
    assert list(per_class) == ["0U", "1U", "2U", "3U"]
    assert per_class["0U"] == answer["margins"]  # Sigfox's margins are class 0U's
    assert per_class["0U"][0] > per_class["1U"][0] > per_class["2U"][0] > per_class["3U"][0] > 0
    assert per_class["0U"][0] - per_class["3U"][0] == 9  # +14 dBm against +5 dBm


def test_point_200_km_away_from_every_station_is_not_covered(client: TestClient, tenants: Tenants) -> None:
    station(client, tenants.root_admin, tenants.operator, "C01", *HOME)
    far = (HOME[0] + 200 * KM_LAT, HOME[1])
    answer = predict(client, tenants.a_admin, *far)
    assert answer["locationCovered"] is False and answer["margins"] == [0, 0, 0]
    assert all(m == [0, 0, 0] for m in class_margins(answer).values())
    assert redundancy(client, tenants.a_admin, *far, deviceSituation="OUTDOOR") == 0
    # ... and margins fall with distance in between.
    near, mid = (predict(client, tenants.a_admin, HOME[0] + km * KM_LAT, HOME[1])["margins"][0] for km in (2, 8))
    assert near > mid > 0


def test_redundancy_counts_the_stations_in_reach_up_to_three(client: TestClient, tenants: Tenants) -> None:
    op = tenants.root_admin
    station(client, op, tenants.operator, "C01", *HOME)
    station(client, op, tenants.operator, "C02", HOME[0] + 2 * KM_LAT, HOME[1])
    station(client, op, tenants.operator, "C03", HOME[0] + 150 * KM_LAT, HOME[1])  # out of reach
    here = (HOME[0] + 1 * KM_LAT, HOME[1])
    a = tenants.a_admin
    assert redundancy(client, a, *here) == 2  # INDOOR by default, as Sigfox documents
    assert predict(client, a, *here)["margins"][1] > 0 and predict(client, a, *here)["margins"][2] == 0
    # 9 km out: outdoors both stations hear a 0U device; indoors (20 dB more) neither does.
    edge = (HOME[0] - 9 * KM_LAT, HOME[1])
    assert redundancy(client, a, *edge, deviceSituation="OUTDOOR") == 2
    assert redundancy(client, a, *edge, deviceSituation="INDOOR") == 0
    assert redundancy(client, a, *edge, deviceSituation="OUTDOOR", deviceClassId=3) < 2  # 9 dB less
    for i in range(3, 6):
        station(client, op, tenants.operator, f"C0{i + 1}", HOME[0] + i * KM_LAT, HOME[1] + 0.01)
    assert redundancy(client, a, *here) == 3  # "3 = three base stations or more"
    assert all(m > 0 for m in predict(client, a, *here)["margins"])


def test_offline_disabled_and_unplaced_stations_do_not_count(
    client: TestClient, ctx: AppContext, tenants: Tenants
) -> None:
    op = tenants.root_admin
    here = (HOME[0] + 1 * KM_LAT, HOME[1])
    station(client, op, tenants.operator, "C01", *HOME)
    disabled = station(client, op, tenants.operator, "C02", HOME[0] + 2 * KM_LAT, HOME[1])
    offline = station(client, op, tenants.operator, "C03", HOME[0], HOME[1] + 0.02)
    station(client, op, tenants.operator, "C04", None, None)  # no position: cannot be placed
    assert redundancy(client, tenants.a_admin, *here) == 3
    r = client.put(f"{API}/base-stations/{disabled['id']}", json={"enabled": False}, headers=op.headers)
    assert r.status_code == 204
    assert redundancy(client, tenants.a_admin, *here) == 2
    # The third station is heard once (ONLINE), then stays silent past the offline threshold.
    auth = Credential(offline["id"], offline["secret"], tenants.operator)
    frame = {"device": "ABC", "seqNumber": 1, "data": "00", "rssi": -120.0, "snr": 10.0, "freq": 868130000}
    r = client.post("/ingest/sigfox", json={"receptions": [frame]}, headers=auth.basic)
    assert r.status_code == 200, r.text
    later = utcnow() + timedelta(seconds=ctx.settings.station_offline_seconds + 60)
    for task in ctx.jobs.periodic:
        with ctx.db.write() as session:
            task.task(session, later)
    state = client.get(f"{API}/base-stations/{offline['id']}", headers=op.headers).json()["state"]
    assert state == "OFFLINE"
    assert redundancy(client, tenants.a_admin, *here) == 1
    answer = predict(client, tenants.a_admin, *here)
    assert answer["margins"][0] > 0 and answer["margins"][1] == 0


def test_a_customer_learns_margins_and_counts_but_never_another_tenants_stations(
    client: TestClient, tenants: Tenants
) -> None:
    """Customer B's station counts in Customer A's prediction (coverage is the network's), but
    no answer to A names it, places it, or lets A pick B's stations out with operatorId."""
    # Stations are the operator's (NETWORK_OPERATOR): it places this one in Customer B's group.
    b_station = station(client, tenants.root_admin, tenants.customer_b, "B0B", *HOME, antennaHeight=42.5)
    a = tenants.a_admin
    here = (HOME[0] + 0.3 * KM_LAT, HOME[1])
    answers = [
        client.get(f"{COV}/global/predictions", params={"lat": here[0], "lng": here[1]}, headers=a.headers),
        client.post(
            f"{COV}/global/predictions", json={"locations": [{"lat": here[0], "lng": here[1]}]}, headers=a.headers
        ),
        client.get(f"{COV}/operators/redundancy", params={"lat": here[0], "lng": here[1]}, headers=a.headers),
        client.get(f"{COV}/global/grid", params={"bbox": "3.99,44.99,4.01,45.01", "step": 0.005}, headers=a.headers),
    ]
    assert [r.status_code for r in answers] == [200] * 4
    assert answers[0].json()["locationCovered"] is True and answers[2].json()["redundancy"] == 1
    for r in answers:
        text = r.text
        assert b_station["id"] not in text and "Station B0B" not in text and "42.5" not in text, text[:300]
    # Positions in the answers are the asked ones only.
    assert set(answers[0].json()) == {"locationCovered", "margins", "deviceClasses"}
    [item] = answers[1].json()["data"]
    assert (
        set(item) == {"lat", "lng", "locationCovered", "margins", "deviceClasses"}
        and (item["lat"], item["lng"]) == here
    )
    assert all(set(c) == {"deviceClassId", "name", "margins"} for c in item["deviceClasses"])
    grid = answers[3].json()
    assert set(grid) == {
        "bbox",
        "step",
        "cols",
        "rows",
        "order",
        "margins",
        "redundancy",
        "deviceClassId",
        "deviceSituation",
    }
    # A cannot narrow the count to B's stations, nor read B's station.
    b_group = str(tenants.customer_b)
    r = client.get(
        f"{COV}/operators/redundancy", params={"lat": here[0], "lng": here[1], "operatorId": b_group}, headers=a.headers
    )
    assert_message(r, 404)
    missing = client.get(
        f"{COV}/operators/redundancy",
        params={"lat": here[0], "lng": here[1], "operatorId": "999999"},
        headers=a.headers,
    )
    assert missing.json() == r.json()
    assert_message(client.get(f"{API}/base-stations/{b_station['id']}", headers=a.headers), 404)
    r = client.get(
        f"{COV}/global/grid",
        params={"bbox": "3.9,44.9,4.1,45.1", "step": 0.01, "operatorId": b_group},
        headers=a.headers,
    )
    assert_message(r, 404)


def test_operator_id_narrows_the_count_to_that_operators_stations(client: TestClient, tenants: Tenants) -> None:
    station(client, tenants.root_admin, tenants.operator, "C01", *HOME)
    station(client, tenants.root_admin, tenants.customer_a, "A01", HOME[0] + 1 * KM_LAT, HOME[1])
    here = (HOME[0] + 0.5 * KM_LAT, HOME[1])
    assert redundancy(client, tenants.a_admin, *here) == 2
    assert redundancy(client, tenants.a_admin, *here, operatorId=str(tenants.customer_a)) == 1
    assert redundancy(client, tenants.root_admin, *here, operatorId=str(tenants.operator)) == 2  # its subtree
    assert redundancy(client, tenants.root_admin, *here, operatorId=str(tenants.customer_b)) == 0
    # OBSERVER reads base stations: it may narrow to its own group too.
    assert redundancy(client, tenants.a_reader, *here, operatorId=str(tenants.customer_a)) == 1


def test_grid_gives_each_class_margins_and_redundancy_row_major_from_the_north_west(
    client: TestClient, tenants: Tenants
) -> None:
    station(client, tenants.root_admin, tenants.operator, "C01", *HOME)
    query = {"bbox": "3.8,44.9,4.2,45.1", "step": 0.05, "deviceSituation": "OUTDOOR"}
    r = client.get(f"{COV}/global/grid", params=query, headers=tenants.a_reader.headers)
    assert r.status_code == 200, r.text
    g = r.json()
    assert (g["cols"], g["rows"], g["bbox"], g["step"]) == (9, 5, [3.8, 44.9, 4.2, 45.1], 0.05)
    assert set(g["margins"]) == {"0U", "1U", "2U", "3U"}
    assert all(len(v) == 45 for v in g["margins"].values()) and len(g["redundancy"]) == 45
    centre = 2 * 9 + 4  # row 2 (45.0, counted from 45.1 down), column 4 (4.0, from 3.8)
    zero_u = g["margins"]["0U"]
    assert zero_u[centre] == max(zero_u) > 0 and g["redundancy"][centre] == 1
    assert zero_u[0] == 0 and g["redundancy"][0] == 0  # the north-west corner is ~18 km away
    assert g["margins"]["3U"][centre] == zero_u[centre] - 9
    # The grid and the single prediction (radius 0: no averaging) agree at a grid point.
    point = predict(client, tenants.a_reader, 45.05, 4.05, radius=0)
    assert zero_u[1 * 9 + 5] == point["margins"][0]
    # Indoors the reach shrinks: fewer points have a station in reach.
    indoor = client.get(
        f"{COV}/global/grid", params=query | {"deviceSituation": "INDOOR"}, headers=tenants.a_reader.headers
    )
    assert 0 < sum(indoor.json()["redundancy"]) < sum(g["redundancy"])


def test_radius_averages_the_margins_over_the_area(client: TestClient, tenants: Tenants) -> None:
    """Hata's loss is linear in log(distance), which averages over a disc to its value at the
    centre while the station is outside the disc: only a disc around the station shows it."""
    station(client, tenants.root_admin, tenants.operator, "C01", *HOME)
    here = (HOME[0] + 0.2 * KM_LAT, HOME[1])
    at_point = predict(client, tenants.a_admin, *here, radius=0)["margins"][0]
    default = predict(client, tenants.a_admin, *here)["margins"][0]  # 300 m: the station is inside
    wide = predict(client, tenants.a_admin, *here, radius=1500)["margins"][0]
    assert at_point > default > wide > 0
    away = (HOME[0] + 5 * KM_LAT, HOME[1])
    assert (
        abs(
            predict(client, tenants.a_admin, *away, radius=0)["margins"][0]
            - predict(client, tenants.a_admin, *away)["margins"][0]
        )
        <= 1
    )


def test_post_predictions_answer_each_location_in_order(client: TestClient, tenants: Tenants) -> None:
    station(client, tenants.root_admin, tenants.operator, "C01", *HOME)
    locations = [{"lat": HOME[0] + km * KM_LAT, "lng": HOME[1]} for km in (1, 200, 5)]
    r = client.post(
        f"{COV}/global/predictions", json={"locations": locations, "radius": 100}, headers=tenants.a_admin.headers
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [(d["lat"], d["lng"]) for d in data] == [(loc["lat"], loc["lng"]) for loc in locations]
    assert [d["locationCovered"] for d in data] == [True, False, True]
    single = predict(client, tenants.a_admin, locations[2]["lat"], locations[2]["lng"], radius=100)
    assert data[2]["margins"] == single["margins"] and data[2]["deviceClasses"] == single["deviceClasses"]


def _wait_done(client: TestClient, job_id: str, who: Credential) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        r = client.get(f"{COV}/global/predictions/bulk/{job_id}", headers=who.headers)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["jobDone"] or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_bulk_predictions_run_as_a_job_and_its_status_lists_the_results(client: TestClient, tenants: Tenants) -> None:
    station(client, tenants.root_admin, tenants.operator, "C01", *HOME)
    locations = [{"lat": HOME[0] + km * KM_LAT, "lng": HOME[1] + 0.001 * km} for km in (1, 200, 5, 12)]
    a = tenants.a_admin
    r = client.post(f"{COV}/global/predictions/bulk", json={"locations": locations}, headers=a.headers)
    assert r.status_code == 201, r.text
    job_id = r.json()["jobId"]
    assert set(r.json()) == {"jobId"} and len(job_id) == 16
    status = _wait_done(client, job_id, a)
    assert status["jobDone"] is True and isinstance(status["time"], int)
    results = status["results"]
    assert [(x["lat"], x["lng"]) for x in results] == [(loc["lat"], loc["lng"]) for loc in locations]
    assert [x["locationCovered"] for x in results] == [True, False, True, True]
    direct = client.post(f"{COV}/global/predictions", json={"locations": locations}, headers=a.headers).json()["data"]
    assert results == direct
    # The job is listed among the caller's jobs; another tenant cannot read it.
    job = client.get(f"{API}/jobs/{job_id}", headers=a.headers).json()
    assert job["kind"] == "coverage.predictions" and job["stats"] == {"covered": 3, "notCovered": 1}
    assert_message(client.get(f"{COV}/global/predictions/bulk/{job_id}", headers=tenants.b_admin.headers), 404)
    assert_message(client.get(f"{COV}/global/predictions/bulk/{'0' * 16}", headers=a.headers), 404)


def test_station_antenna_height_and_gain_are_settable_validated_and_change_the_prediction(
    client: TestClient, tenants: Tenants
) -> None:
    op = tenants.root_admin
    made = station(client, op, tenants.operator, "C01", *HOME)
    url = f"{API}/base-stations/{made['id']}"
    shown = client.get(url, headers=op.headers).json()
    assert "antennaHeight" not in shown and "antennaGain" not in shown  # the defaults apply
    here = (HOME[0] + 5 * KM_LAT, HOME[1])
    before = predict(client, tenants.a_admin, *here)["margins"][0]
    r = client.put(url, json={"antennaHeight": 80, "antennaGain": 8.5}, headers=op.headers)
    assert r.status_code == 204, r.text
    shown = client.get(url, headers=op.headers).json()
    assert (shown["antennaHeight"], shown["antennaGain"]) == (80, 8.5)
    listed = client.get(f"{API}/base-stations", headers=op.headers).json()["data"]
    assert [(s["antennaHeight"], s["antennaGain"]) for s in listed] == [(80, 8.5)]
    after = predict(client, tenants.a_admin, *here)["margins"][0]
    assert after > before + 8  # 3.5 dB more gain and a mast 50 m higher
    with unchanged(client.app.state.ctx.db):  # type: ignore[attr-defined]
        for body, field in (
            ({"antennaHeight": 0}, "antennaHeight"),
            ({"antennaHeight": 501}, "antennaHeight"),
            ({"antennaHeight": "tall"}, "antennaHeight"),
            ({"antennaGain": 31}, "antennaGain"),
            ({"antennaGain": -10.5}, "antennaGain"),
        ):
            assert_invalid(client.put(url, json=body, headers=op.headers), field)
        create = {"id": "C02", "groupId": str(tenants.operator), "name": "Tall", "antennaHeight": 1000}
        assert_invalid(client.post(f"{API}/base-stations", json=create, headers=op.headers), "antennaHeight")
    r = client.put(url, json={"antennaHeight": None}, headers=op.headers)
    assert r.status_code == 204
    shown = client.get(url, headers=op.headers).json()
    assert "antennaHeight" not in shown and shown["antennaGain"] == 8.5


BAD_QUERIES: list[tuple[str, dict[str, Any], str]] = [
    ("/global/predictions", {"lat": 91, "lng": 4}, "lat"),
    ("/global/predictions", {"lat": -90.5, "lng": 4}, "lat"),
    ("/global/predictions", {"lat": "nan", "lng": 4}, "lat"),
    ("/global/predictions", {"lat": 45, "lng": 181}, "lng"),
    ("/global/predictions", {"lng": 4}, "lat"),
    ("/global/predictions", {"lat": "north", "lng": 4}, "lat"),
    ("/global/predictions", {"lat": 45, "lng": 4, "radius": -1}, "radius"),
    ("/global/predictions", {"lat": 45, "lng": 4, "radius": 10_001}, "radius"),
    ("/global/predictions", {"lat": 45, "lng": 4, "groupId": "x"}, "groupId"),
    ("/operators/redundancy", {"lat": 91, "lng": 4}, "lat"),
    ("/operators/redundancy", {"lat": 45, "lng": 4, "deviceClassId": 4}, "deviceClassId"),
    ("/operators/redundancy", {"lat": 45, "lng": 4, "deviceClassId": "0U"}, "deviceClassId"),
    ("/operators/redundancy", {"lat": 45, "lng": 4, "deviceSituation": "SPACE"}, "deviceSituation"),
    ("/operators/redundancy", {"lat": 45, "lng": 4, "operatorId": "-1"}, "operatorId"),
    ("/global/grid", {"bbox": "4.2,44.9,3.8,45.1", "step": 0.01}, "bbox"),  # minLng > maxLng
    ("/global/grid", {"bbox": "3.8,45.1,4.2,44.9", "step": 0.01}, "bbox"),  # minLat > maxLat
    ("/global/grid", {"bbox": "3.8,44.9,4.2", "step": 0.01}, "bbox"),
    ("/global/grid", {"bbox": "3.8,44.9,4.2,x", "step": 0.01}, "bbox"),
    ("/global/grid", {"bbox": "3.8,-91,4.2,45", "step": 0.01}, "bbox"),
    ("/global/grid", {"bbox": "-181,44.9,4.2,45.1", "step": 0.01}, "bbox"),
    ("/global/grid", {"bbox": "3.8,44.9,4.2,45.1", "step": 0}, "step"),
    ("/global/grid", {"bbox": "3.8,44.9,4.2,45.1", "step": -0.1}, "step"),
    ("/global/grid", {"bbox": "3.8,44.9,4.2,45.1", "step": "inf"}, "step"),
    ("/global/grid", {"bbox": "3.8,44.9,4.2,45.1"}, "step"),
    ("/global/grid", {"bbox": "-10,40,10,50", "step": 0.01}, "step"),  # 2,001 x 1,001 points: over the cap
    ("/global/grid", {"bbox": "3.8,44.9,4.2,45.1", "step": 0.01, "deviceSituation": "x"}, "deviceSituation"),
]


@pytest.mark.parametrize(("route", "query", "field"), BAD_QUERIES, ids=[f"{r}-{f}" for r, _q, f in BAD_QUERIES])
def test_bad_query_answers_400_naming_the_field(
    client: TestClient, tenants: Tenants, route: str, query: dict[str, Any], field: str
) -> None:
    assert_invalid(client.get(COV + route, params=query, headers=tenants.a_admin.headers), field, "query")


def test_grid_at_the_point_cap_is_served(client: TestClient, tenants: Tenants) -> None:
    # 501 x 499 = 249,999 points: just under the 250,000 cap.
    r = client.get(f"{COV}/global/grid", params={"bbox": "0,0,5,4.98", "step": 0.01}, headers=tenants.a_admin.headers)
    assert r.status_code == 200, r.text
    assert r.json()["cols"] * r.json()["rows"] == 250_000 - 1


BAD_BODIES: list[tuple[dict[str, Any], str]] = [
    ({"locations": []}, "locations"),
    ({"locations": [{"lat": 45, "lng": 4}, {"lat": 91, "lng": 4}]}, "locations[1].lat"),
    ({"locations": [{"lat": 45, "lng": -181}]}, "locations[0].lng"),
    ({"locations": [{"lat": 45}]}, "locations[0].lng"),
    ({"locations": [{"lat": "x", "lng": 4}]}, "locations[0].lat"),
    ({"locations": [{"lat": 45, "lng": 4, "alt": 3}]}, "locations[0].alt"),
    ({"locations": [{"lat": 45, "lng": 4}], "radius": -5}, "radius"),
    ({"locations": [{"lat": 45, "lng": 4}], "groupId": "abc"}, "groupId"),
    ({"locations": [{"lat": 45, "lng": 4}], "colour": "red"}, "colour"),
    ({"radius": 300}, "locations"),
]


def test_bad_bodies_answer_400_naming_the_field_and_start_no_job(client: TestClient, tenants: Tenants) -> None:
    db = client.app.state.ctx.db  # type: ignore[attr-defined]
    h = tenants.a_admin.headers
    with unchanged(db):
        for route in ("/global/predictions", "/global/predictions/bulk"):
            for body, field in BAD_BODIES:
                assert_invalid(client.post(COV + route, json=body, headers=h), field)
        many = {"locations": [{"lat": 45, "lng": 4}] * 1001}
        assert_invalid(client.post(f"{COV}/global/predictions", json=many, headers=h), "locations")
        too_many = {"locations": [{"lat": 45, "lng": 4}] * 10_001}
        assert_invalid(client.post(f"{COV}/global/predictions/bulk", json=too_many, headers=h), "locations")
        foreign = {"locations": [{"lat": 45, "lng": 4}], "groupId": str(tenants.customer_b)}
        for route in ("/global/predictions", "/global/predictions/bulk"):
            assert_invalid(client.post(COV + route, json=foreign, headers=h), "groupId")
        assert_invalid(client.get(f"{COV}/global/predictions/bulk/xyz", headers=h), "jobId", "path")


def test_group_id_must_be_a_visible_group_and_changes_nothing(client: TestClient, tenants: Tenants) -> None:
    """Every operator's stations count already, so Sigfox's `groupId` adds none; it is checked."""
    station(client, tenants.root_admin, tenants.operator, "C01", *HOME)
    a = tenants.a_admin
    plain = predict(client, a, *HOME)
    assert predict(client, a, *HOME, groupId=str(tenants.customer_a)) == plain
    r = client.get(
        f"{COV}/global/predictions",
        params={"lat": HOME[0], "lng": HOME[1], "groupId": str(tenants.customer_b)},
        headers=a.headers,
    )
    assert_message(r, 404)
