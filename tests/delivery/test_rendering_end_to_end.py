"""The rendering table, end to end on both databases: each row is one callback (type and subtype,
channel, where the template sits) and the exact text its receiver gets. Frames go in through the
real ingest, downlinks through the real decider and station reports, the keep-alive through the
real upkeep; the delivery worker is driven round by round with an injected clock; requests land
on a real HTTP server on 127.0.0.1 and mails on a real SMTP server (aiosmtpd).

One world per database serves the whole table: a device type per kind of traffic, one message
each, every row's callback on it. The world is built once per module and database (`world`);
each row's test then reads what its receiver got. Expected values are literal: the message
time is fixed (`T0`, epoch 1710072000.9), so `{time}` is `1710072000` (seconds, truncated).

Where a row sits (`place`) and what is compared:
- `get`: URL channel, GET, the template is the URL's query string; the query as received.
- `form` / `json` / `text`: URL channel, POST with that content type; the body as received.
- `header`: URL channel, a custom header's value; its bytes as received (UTF-8).
- `line`: BATCH_URL, the line pattern; the request body (a line per delivery it carries).
- `subject` / `body`: EMAIL; the subject as decoded, the body without the final newline that the
  MIME layer adds.
DATA_ADVANCED takes only a JSON POST on URL: its `get` and `header` rows sit in such a callback.
A row is a list of what came, one entry per request or mail: most rows expect exactly one.
Deliveries are at least once: on a loaded machine a request can reach the receiver and its
answer come after the worker's timeout, and the outbox sends it again later under the same
`webhook-id`. Such a repeat counts once when the outbox recorded that many attempts of that
delivery and the text is the same (`_received`); anything else (a second delivery, another
text) still fails the row.
A rendering found wrong outside the template engine is a row marked `xfail=...` (strict).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from heron.api.app import create_app
from heron.bootstrap import prepare
from heron.db.engine import Database
from heron.delivery.models import Delivery
from heron.keys import Keyring
from heron.registry import contracts, device_types, devices
from heron.runtime.context import AppContext, build_context
from heron.tenancy.access import SYSTEM
from tests.conftest import TEST_KEK, Tenants, fresh_database, make_settings, make_tenants
from tests.delivery.test_channels import Inbox
from tests.delivery.test_outbox import Receiver, rounds
from tests.downlink.test_downlinks import collect, decide
from tests.events.test_events import upkeep
from tests.network.sigfox.test_ingest import Clock, Station, frame, send

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

T0 = datetime(2024, 3, 10, 12, 0, 0, 900_000, tzinfo=UTC)  # 1710072000.9

# Callback kinds: (callbackType, callbackSubtype) as the API takes them.
KINDS: dict[str, tuple[int, int | None]] = {
    "UPLINK": (0, 2),
    "BIDIR": (0, 3),
    "STATUS": (1, 0),
    "ACKNOWLEDGE": (1, 4),
    "REPEATER": (1, 5),
    "DATA_ADVANCED": (1, 6),
    "ERROR": (2, None),
}
CHANNELS = {
    "get": "URL",
    "form": "URL",
    "json": "URL",
    "text": "URL",
    "header": "URL",
    "line": "BATCH_URL",
    "subject": "EMAIL",
    "body": "EMAIL",
}
CONTENT_TYPES = {"form": "application/x-www-form-urlencoded", "json": "application/json", "text": "text/plain"}

# The `data` device type's payload grammar (payload type 3) and its frame's 12 bytes:
# label = 22 26 3d 20 e9 5c 0a 2b: `"`, `&`, `=`, space, é (latin-1 e9), backslash, LF, `+`;
# temp = 33 ff little-endian: -205; hum = c8: 200; flags 80: door (bit 7) set, open (bit 0) not.
DATA_GRAMMAR = "label::char:8 temp::int:16:little-endian hum::uint:8 door::bool:7 open::bool:0"
DATA_PAYLOAD = "22263D20E95C0A2B33FFC880"  # sent upper-case; `{data}` is lower-case
# The `quiet` device type's grammar and its frame's 9 bytes: count = 00 ff: 255; level = be 80 00 00:
# -0.25 (float 32); name = 41 85 00: "A", NEL (latin-1 85, a C1 control character that Python's
# str.splitlines() takes for a line break) and NUL padding; `extra` lies beyond (missing).
QUIET_GRAMMAR = "count::uint:16 level::float:32 name::char:3 extra::uint:8"
QUIET_PAYLOAD = "00FFBE800000418500"


@dataclass(frozen=True)
class Row:
    """One callback and the exact text its receiver gets for the one message of `traffic`."""

    id: str
    kind: str  # a key of KINDS
    traffic: str  # the device type whose message (or event) it renders: a key of TRAFFIC
    place: str  # a key of CHANNELS
    template: str
    expected: str | tuple[str, ...]  # several: one per request (or mail), in the order they come
    extra: dict[str, Any] = field(default_factory=dict)  # more callback fields (payloadConfig, sendDuplicate)

    @property
    def channel(self) -> str:
        return CHANNELS[self.place]


def row(
    id: str,
    kind: str,
    traffic: str,
    place: str,
    template: str,
    expected: str | tuple[str, ...],
    *,
    xfail: str | None = None,
    **extra: Any,
) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(Row(id, kind, traffic, place, template, expected, extra), id=id, marks=marks)


LABEL_URL = "%22%26%3D%20%C3%A9%5C%0A%2B"
LABEL_FORM = "%22%26%3D+%C3%A9%5C%0A%2B"
LABEL_IN_JSON_STRING = r"\"&= é\\\n+"
LABEL_TEXT = '"&= é\\\n+'  # the decoded text as is: LF included
LABEL_HEADER = '"&= é\\+'  # control characters removed
DATA = "22263d20e95c0a2b33ffc880"
DUPLICATES = (
    '[{"bsId":"1E6AB","nbRep":1,"rssi":-121.5,"snr":7.0},'
    '{"bsId":"C0FFEE","nbRep":3,"rssi":-110.0,"snr":12.5},'
    '{"bsId":"2B","nbRep":2,"rssi":-135.25,"snr":-2.5}]'
)
INFO = "No message received since 2024-03-10 12:00:00"
DECLARED_LOCATION = '{"lat":43.6,"lng":-1.25,"radius":50,"source":3,"status":1}'

ROWS = [
    # -- DATA UPLINK: the `data` message (AB12CD sent as 0x00ab12cd, seq 4095, heard by 1E6AB at
    # -121.5/7 and C0FFEE at -110/12.5, the best; the device's own position 43.6, -1.25) ---------
    row(
        "uplink-get-ids-case",
        "UPLINK",
        "data",
        "get",
        "device={device}&station={station}&deviceTypeId={deviceTypeId}",
        "device=AB12CD&station=C0FFEE&deviceTypeId=1",
    ),
    row(
        "uplink-get-time-seq-data",
        "UPLINK",
        "data",
        "get",
        "time={time}&seq={seqNumber}&data={data}",
        f"time=1710072000&seq=4095&data={DATA}",
    ),
    row(
        "uplink-get-radio-decimals",
        "UPLINK",
        "data",
        "get",
        "rssi={rssi}&snr={snr}&avgSnr={avgSnr}",
        "rssi=-110.00&snr=12.50&avgSnr=9.75",
    ),
    row(
        "uplink-get-position-bool",
        "UPLINK",
        "data",
        "get",
        "lat={lat}&lng={lng}&duplicate={duplicate}",
        "lat=43.6&lng=-1.25&duplicate=false",
    ),
    row(
        "uplink-get-custom-data",
        "UPLINK",
        "data",
        "get",
        "label={customData#label}&temp={customData#temp}&hum={customData#hum}"
        "&door={customData#door}&open={customData#open}",
        f"label={LABEL_URL}&temp=-205&hum=200&door=true&open=false",
    ),
    row(
        "uplink-get-own-payload-config",
        "UPLINK",
        "data",
        "get",
        "raw={customData#raw}&tail={customData#tail}",
        "raw=572931360&tail=128",
        payloadConfig="raw::uint:32 tail:11:uint:8",
    ),
    row(
        "uplink-form-custom-data",
        "UPLINK",
        "data",
        "form",
        "label={customData#label}&door={customData#door}&temp={customData#temp}",
        f"label={LABEL_FORM}&door=true&temp=-205",
    ),
    row(
        "uplink-form-radio-time",
        "UPLINK",
        "data",
        "form",
        "device={device}&rssi={rssi}&snr={snr}&time={time}&lng={lng}",
        "device=AB12CD&rssi=-110.00&snr=12.50&time=1710072000&lng=-1.25",
    ),
    row(
        "uplink-json-bare-values",
        "UPLINK",
        "data",
        "json",
        '{"device": "{device}", "time": {time}, "seq": {seqNumber}, "rssi": {rssi}, "snr": {snr},'
        ' "avgSnr": {avgSnr}, "lat": {lat}, "lng": {lng}, "duplicate": {duplicate}, "data": "{data}"}',
        '{"device": "AB12CD", "time": 1710072000, "seq": 4095, "rssi": -110.00, "snr": 12.50,'
        f' "avgSnr": 9.75, "lat": 43.6, "lng": -1.25, "duplicate": false, "data": "{DATA}"}}',
    ),
    row(
        "uplink-json-values-in-strings",
        "UPLINK",
        "data",
        "json",
        '{"rssi": "{rssi}", "time": "{time}", "duplicate": "{duplicate}", "station": "{station}"}',
        '{"rssi": "-110.00", "time": "1710072000", "duplicate": "false", "station": "C0FFEE"}',
    ),
    row(
        "uplink-json-custom-data-bare",
        "UPLINK",
        "data",
        "json",
        '{"label": {customData#label}, "temp": {customData#temp}, "hum": {customData#hum},'
        ' "door": {customData#door}, "open": {customData#open}}',
        f'{{"label": "{LABEL_IN_JSON_STRING}", "temp": -205, "hum": 200, "door": true, "open": false}}',
    ),
    row(
        "uplink-json-custom-data-in-strings",
        "UPLINK",
        "data",
        "json",
        '{"label": "<{customData#label}>", "temp": "{customData#temp}", "door": "{customData#door}"}',
        f'{{"label": "<{LABEL_IN_JSON_STRING}>", "temp": "-205", "door": "true"}}',
    ),
    row(
        "uplink-text",
        "UPLINK",
        "data",
        "text",
        "{device};{time};{data};{rssi};{snr};{customData#label};{customData#door}",
        f"AB12CD;1710072000;{DATA};-110.00;12.50;{LABEL_TEXT};true",
    ),
    row(
        "uplink-header-ids-radio",
        "UPLINK",
        "data",
        "header",
        "{device} {station} {rssi} {time}",
        "AB12CD C0FFEE -110.00 1710072000",
    ),
    row(
        "uplink-header-custom-data",
        "UPLINK",
        "data",
        "header",
        "{customData#label}|{customData#temp}",
        f"{LABEL_HEADER}|-205",
    ),
    row(
        "uplink-batch-line",
        "UPLINK",
        "data",
        "line",
        "{device};{time};{data};{seqNumber};{rssi};{snr};{avgSnr};{station};{lat};{lng};{duplicate}",
        f"AB12CD;1710072000;{DATA};4095;-110.00;12.50;9.75;C0FFEE;43.6;-1.25;false",
    ),
    row(
        "uplink-batch-line-custom-data",
        "UPLINK",
        "data",
        "line",
        "{customData#label}|{customData#temp}|{customData#door}",
        '"&= é\\ +|-205|true',  # a line break inside a line becomes a space
    ),
    row(
        "uplink-email-subject",
        "UPLINK",
        "data",
        "subject",
        "Uplink {device} #{seqNumber} {rssi} dBm {customData#label}",
        f"Uplink AB12CD #4095 -110.00 dBm {LABEL_HEADER}",
    ),
    row(
        "uplink-email-body",
        "UPLINK",
        "data",
        "body",
        "data={data}\ntime={time}\nrssi={rssi}\nlabel={customData#label}\nlat={lat}",
        f"data={DATA}\ntime=1710072000\nrssi=-110.00\nlabel={LABEL_TEXT}\nlat=43.6",
    ),
    # sendDuplicate: one more delivery for the other station of the dedup window, `{duplicate}`
    # true and that station's values (the device's own position still)
    row(
        "uplink-get-send-duplicate",
        "UPLINK",
        "data",
        "get",
        "station={station}&rssi={rssi}&snr={snr}&lat={lat}&duplicate={duplicate}",
        (
            "station=C0FFEE&rssi=-110.00&snr=12.50&lat=43.6&duplicate=false",
            "station=1E6AB&rssi=-121.50&snr=7.00&lat=43.6&duplicate=true",
        ),
        sendDuplicate=True,
    ),
    row(
        "uplink-batch-line-send-duplicate",
        "UPLINK",
        "data",
        "line",
        "{device};{station};{rssi};{duplicate}",
        "AB12CD;C0FFEE;-110.00;false\nAB12CD;1E6AB;-121.50;true",  # one request, a line each
        sendDuplicate=True,
    ),
    row(
        "bidir-email-subject-send-duplicate",
        "BIDIR",
        "data",
        "subject",
        "{station} {snr} {duplicate} {ack}",
        ("C0FFEE 12.50 false true", "1E6AB 7.00 true true"),
        sendDuplicate=True,
    ),
    # -- DATA BIDIR: the same message, which asked for a downlink -----------------------------------
    row(
        "bidir-get",
        "BIDIR",
        "data",
        "get",
        "ack={ack}&longPolling={longPolling}&device={device}&rssi={rssi}",
        "ack=true&longPolling=false&device=AB12CD&rssi=-110.00",
    ),
    row(
        "bidir-form",
        "BIDIR",
        "data",
        "form",
        "ack={ack}&label={customData#label}",
        f"ack=true&label={LABEL_FORM}",
    ),
    row(
        "bidir-json",
        "BIDIR",
        "data",
        "json",
        '{"ack": {ack}, "longPolling": {longPolling}, "ackText": "{ack}", "seq": {seqNumber}, "hum": {customData#hum}}',
        '{"ack": true, "longPolling": false, "ackText": "true", "seq": 4095, "hum": 200}',
    ),
    row("bidir-text", "BIDIR", "data", "text", "{device} ack={ack} {longPolling}", "AB12CD ack=true false"),
    row("bidir-header", "BIDIR", "data", "header", "{ack}/{longPolling}", "true/false"),
    row("bidir-email-subject", "BIDIR", "data", "subject", "BIDIR {device} ack={ack}", "BIDIR AB12CD ack=true"),
    row(
        "bidir-email-body",
        "BIDIR",
        "data",
        "body",
        "ack={ack}\nlongPolling={longPolling}\nsnr={snr}",
        "ack=true\nlongPolling=false\nsnr=12.50",
    ),
    # -- DATA BIDIR as the device type's downlink callback: called by the decider, not the outbox --
    row(
        "bidir-downlink-callback-json",
        "BIDIR",
        "hook",
        "json",
        '{"device": "{device}", "ack": {ack}, "rssi": {rssi}, "time": {time}, "data": "{data}"}',
        '{"device": "B1D", "ack": true, "rssi": -100.00, "time": 1710072000, "data": "cafe"}',
    ),
    # -- SERVICE DATA_ADVANCED: the same message after the horizon, with 2B's late reception ---------
    row(
        "advanced-json-link-quality",
        "DATA_ADVANCED",
        "data",
        "json",
        '{"lqi": "{lqi}", "linkQuality": {linkQuality}, "operatorName": "{operatorName}",'
        ' "countryCode": {countryCode}}',
        '{"lqi": "EXCELLENT", "linkQuality": 3, "operatorName": "Heron", "countryCode": null}',
    ),
    row(
        "advanced-json-duplicates",
        "DATA_ADVANCED",
        "data",
        "json",
        '{"duplicates": {duplicates}}',
        f'{{"duplicates": {DUPLICATES}}}',
    ),
    row(
        "advanced-json-duplicates-in-string",
        "DATA_ADVANCED",
        "data",
        "json",
        '{"duplicates": "{duplicates}"}',
        '{"duplicates": "' + DUPLICATES.replace('"', '\\"') + '"}',
    ),
    row(
        "advanced-json-location",
        "DATA_ADVANCED",
        "data",
        "json",
        '{"fixedLat": {fixedLat}, "fixedLng": {fixedLng}, "computedLocation": {computedLocation}}',
        # The device's declared position wins over the network's estimate (source 3, radius 50).
        '{"fixedLat": 43.6, "fixedLng": -1.25, "computedLocation": ' + DECLARED_LOCATION + "}",
    ),
    row(
        "advanced-json-message",
        "DATA_ADVANCED",
        "data",
        "json",
        '{"device": "{device}", "time": {time}, "data": "{data}", "seqNumber": {seqNumber},'
        ' "temp": {customData#temp}, "label": "{customData#label}"}',
        f'{{"device": "AB12CD", "time": 1710072000, "data": "{DATA}", "seqNumber": 4095,'
        f' "temp": -205, "label": "{LABEL_IN_JSON_STRING}"}}',
    ),
    row(
        "advanced-get-in-url",
        "DATA_ADVANCED",
        "data",
        "get",
        "lqi={lqi}&q={linkQuality}&op={operatorName}&cc={countryCode}&lat={fixedLat}",
        "lqi=EXCELLENT&q=3&op=Heron&cc=&lat=43.6",
    ),
    row("advanced-header", "DATA_ADVANCED", "data", "header", "{lqi} {linkQuality} {countryCode}", "EXCELLENT 3 "),
    row(
        "advanced-email-subject",
        "DATA_ADVANCED",
        "data",
        "subject",
        "{device} {lqi} {linkQuality} {fixedLat}",
        "AB12CD EXCELLENT 3 43.6",
    ),
    row(
        "advanced-email-body",
        "DATA_ADVANCED",
        "data",
        "body",
        "duplicates={duplicates}\ncountryCode={countryCode}",
        f"duplicates={DUPLICATES}\ncountryCode=",
    ),
    # -- missing values: the `quiet` message (E0, seq 0, 2 bytes 00ff, heard only by D00D, a station
    # with no position, with neither RSSI nor SNR; the device has no position either) ---------------
    row(
        "uplink-json-declared-location",
        "UPLINK",
        "data",
        "json",
        '{"computedLocation": {computedLocation}, "text": "{computedLocation}"}',
        '{"computedLocation": ' + DECLARED_LOCATION + ', "text": "' + DECLARED_LOCATION.replace('"', '\\"') + '"}',
    ),
    row(
        "uplink-quiet-get-nulls",
        "UPLINK",
        "quiet",
        "get",
        "rssi={rssi}&snr={snr}&avgSnr={avgSnr}&lat={lat}&lng={lng}&station={station}&seq={seqNumber}"
        "&level={customData#level}",
        "rssi=&snr=&avgSnr=&lat=&lng=&station=D00D&seq=0&level=-0.25",
    ),
    row("uplink-quiet-get-no-location", "UPLINK", "quiet", "get", "loc={computedLocation}", "loc="),
    row(
        "uplink-quiet-form-nulls",
        "UPLINK",
        "quiet",
        "form",
        "rssi={rssi}&extra={customData#extra}&count={customData#count}&name={customData#name}",
        "rssi=&extra=&count=255&name=A%C2%85%00",
    ),
    row(
        "uplink-quiet-json-bare-nulls",
        "UPLINK",
        "quiet",
        "json",
        '{"rssi": {rssi}, "snr": {snr}, "avgSnr": {avgSnr}, "lat": {lat}, "extra": {customData#extra},'
        ' "count": {customData#count}, "level": {customData#level}, "seq": {seqNumber}}',
        '{"rssi": null, "snr": null, "avgSnr": null, "lat": null, "extra": null, "count": 255, "level": -0.25,'
        ' "seq": 0}',
    ),
    row(
        "uplink-quiet-json-nulls-in-strings",
        "UPLINK",
        "quiet",
        "json",
        '{"rssi": "{rssi}", "lng": "{lng}", "extra": "{customData#extra}", "name": "{customData#name}"}',
        '{"rssi": "null", "lng": "null", "extra": "null", "name": "A\x85\\u0000"}',
    ),
    row(
        "uplink-quiet-text-nulls",
        "UPLINK",
        "quiet",
        "text",
        "[{rssi}][{avgSnr}][{lat}][{customData#extra}][{seqNumber}][{customData#name}]",
        "[][][][][0][A\x85\0]",
    ),
    row(
        "uplink-quiet-header-nulls",
        "UPLINK",
        "quiet",
        "header",
        "rssi={rssi};lat={lat};name={customData#name}",
        "rssi=;lat=;name=A",  # control characters removed
    ),
    row(
        "uplink-quiet-batch-line-nulls",
        "UPLINK",
        "quiet",
        "line",
        "{device};{rssi};{snr};{seqNumber};{customData#extra};{customData#name}",
        "E0;;;0;;A \0",  # NEL, a line break for str.splitlines(), becomes a space
    ),
    row(
        "uplink-quiet-email-subject-nulls",
        "UPLINK",
        "quiet",
        "subject",
        "rssi=[{rssi}] name=[{customData#name}]",
        "rssi=[] name=[A]",
    ),
    row(
        "uplink-quiet-email-body-nulls",
        "UPLINK",
        "quiet",
        "body",
        "rssi={rssi}\nextra={customData#extra}\nname={customData#name}",
        "rssi=\nextra=\nname=A\x85\0",
    ),
    row("bidir-quiet-get-no-ack", "BIDIR", "quiet", "get", "ack={ack}", "ack=false"),
    row(
        "bidir-quiet-json-no-ack",
        "BIDIR",
        "quiet",
        "json",
        '{"ack": {ack}, "rssi": {rssi}}',
        '{"ack": false, "rssi": null}',
    ),
    row(
        "advanced-quiet-json-nulls",
        "DATA_ADVANCED",
        "quiet",
        "json",
        '{"lqi": "{lqi}", "linkQuality": {linkQuality}, "duplicates": {duplicates}, "fixedLat": {fixedLat}}',
        '{"lqi": "NA", "linkQuality": 4, "duplicates": [{"bsId":"D00D","nbRep":1,"rssi":null,"snr":null}],'
        ' "fixedLat": null}',
    ),
    # -- SERVICE STATUS: a keep-alive frame of 5A7 (seq 12, battery 3.6, temperature 20 sent as an
    # integer, heard by 1E6AB at -127.75/4; the device has no position: the station's) -------------
    row(
        "status-get",
        "STATUS",
        "status",
        "get",
        "temp={temp}&batt={batt}&rssi={rssi}&snr={snr}",
        "temp=20.0&batt=3.6&rssi=-127.75&snr=4.00",
    ),
    row(
        "status-form",
        "STATUS",
        "status",
        "form",
        "device={device}&seq={seqNumber}&station={station}&lat={lat}&lng={lng}",
        "device=5A7&seq=12&station=1E6AB&lat=45.5&lng=4.25",
    ),
    row(
        "status-json",
        "STATUS",
        "status",
        "json",
        '{"temp": {temp}, "batt": {batt}, "tempText": "{temp}", "time": {time}, "avgSnr": {avgSnr},'
        ' "duplicate": {duplicate}}',
        '{"temp": 20.0, "batt": 3.6, "tempText": "20.0", "time": 1710072000, "avgSnr": 4.00, "duplicate": false}',
    ),
    row("status-text", "STATUS", "status", "text", "{device} {temp}C {batt}V", "5A7 20.0C 3.6V"),
    row(
        "status-json-network-location",
        "STATUS",
        "status",
        "json",
        '{"loc": {computedLocation}}',
        # One station (1E6AB): its position, and the distance -127.75 dBm stands for as radius.
        '{"loc": {"lat":45.5,"lng":4.25,"radius":7426,"source":2,"status":1}}',
    ),
    row("status-header", "STATUS", "status", "header", "{temp};{batt}", "20.0;3.6"),
    row("status-email-subject", "STATUS", "status", "subject", "Status {device}: {batt} V", "Status 5A7: 3.6 V"),
    row(
        "status-email-body",
        "STATUS",
        "status",
        "body",
        "temp={temp}\nbatt={batt}\nrssi={rssi}",
        "temp=20.0\nbatt=3.6\nrssi=-127.75",
    ),
    # -- SERVICE REPEATER: a repeater frame of 4E9 (seq 3, battery 3.25). The ingest carries no
    # repeater counters, so they are missing: empty, or null in JSON ------------------------------
    row(
        "repeater-get",
        "REPEATER",
        "repeater",
        "get",
        "device={device}&time={time}&batt={batt}",
        "device=4E9&time=1710072000&batt=3.25",
    ),
    row(
        "repeater-form-counters",
        "REPEATER",
        "repeater",
        "form",
        "repeated={repeatedMsg}&whitelist={whitelistDevices}",
        "repeated=&whitelist=",
    ),
    row(
        "repeater-json",
        "REPEATER",
        "repeater",
        "json",
        '{"batt": {batt}, "repeatedMsg": {repeatedMsg}, "unwantedMsg": {unwantedMsg}, "wrongMsg": {wrongMsg},'
        ' "overRegulMsg": {overRegulMsg}, "unwantedDevices": {unwantedDevices},'
        ' "whitelistDevices": {whitelistDevices}, "device": "{device}"}',
        '{"batt": 3.25, "repeatedMsg": null, "unwantedMsg": null, "wrongMsg": null, "overRegulMsg": null,'
        ' "unwantedDevices": null, "whitelistDevices": null, "device": "4E9"}',
    ),
    row("repeater-text", "REPEATER", "repeater", "text", "{device};{batt};{repeatedMsg}", "4E9;3.25;"),
    row("repeater-header", "REPEATER", "repeater", "header", "{batt} V", "3.25 V"),
    row("repeater-email-subject", "REPEATER", "repeater", "subject", "Repeater {device} {batt}", "Repeater 4E9 3.25"),
    row(
        "repeater-email-body", "REPEATER", "repeater", "body", "batt={batt}\ntime={time}", "batt=3.25\ntime=1710072000"
    ),
    # -- SERVICE ACKNOWLEDGE: ACC's DIRECT downlink, collected and reported emitted by C0FFEE at
    # T0 + 1.1 s --------------------------------------------------------------------------------------
    row(
        "ack-get",
        "ACKNOWLEDGE",
        "ack",
        "get",
        "device={device}&time={time}&infoCode={infoCode}&infoMessage={infoMessage}"
        "&downlinkAck={downlinkAck}&downlinkOverusage={downlinkOverusage}",
        "device=ACC&time=1710072002&infoCode=0&infoMessage=Acknowledged&downlinkAck=true&downlinkOverusage=false",
    ),
    row(
        "ack-form",
        "ACKNOWLEDGE",
        "ack",
        "form",
        "info={infoMessage}&ack={downlinkAck}&code={infoCode}",
        "info=Acknowledged&ack=true&code=0",
    ),
    row(
        "ack-json-bare",
        "ACKNOWLEDGE",
        "ack",
        "json",
        '{"device": "{device}", "time": {time}, "infoCode": {infoCode}, "infoMessage": "{infoMessage}",'
        ' "downlinkAck": {downlinkAck}, "downlinkOverusage": {downlinkOverusage}}',
        '{"device": "ACC", "time": 1710072002, "infoCode": 0, "infoMessage": "Acknowledged",'
        ' "downlinkAck": true, "downlinkOverusage": false}',
    ),
    row(
        "ack-json-in-strings",
        "ACKNOWLEDGE",
        "ack",
        "json",
        '{"ack": "{downlinkAck}", "code": "{infoCode}", "info": {infoMessage}}',
        '{"ack": "true", "code": "0", "info": "Acknowledged"}',
    ),
    row("ack-text", "ACKNOWLEDGE", "ack", "text", "{device} {downlinkAck} {time}", "ACC true 1710072002"),
    row("ack-header", "ACKNOWLEDGE", "ack", "header", "{downlinkAck},{downlinkOverusage}", "true,false"),
    row("ack-email-subject", "ACKNOWLEDGE", "ack", "subject", "Ack {device}: {infoMessage}", "Ack ACC: Acknowledged"),
    row(
        "ack-email-body",
        "ACKNOWLEDGE",
        "ack",
        "body",
        "ack={downlinkAck}\noverusage={downlinkOverusage}",
        "ack=true\noverusage=false",
    ),
    # -- ERROR: E44 (keep-alive 1800 s, last heard at T0) lost at T0 + 1801 s -------------------------
    row(
        "error-get",
        "ERROR",
        "error",
        "get",
        "device={device}&time={time}&severity={severity}&info={info}",
        "device=E44&time=1710073801&severity=ERROR&info=No%20message%20received%20since%202024-03-10%2012%3A00%3A00",
    ),
    row(
        "error-form", "ERROR", "error", "form", "info={info}", "info=No+message+received+since+2024-03-10+12%3A00%3A00"
    ),
    row(
        "error-json",
        "ERROR",
        "error",
        "json",
        '{"device": "{device}", "time": {time}, "info": "{info}", "severity": "{severity}"}',
        f'{{"device": "E44", "time": 1710073801, "info": "{INFO}", "severity": "ERROR"}}',
    ),
    row(
        "error-json-text-as-bare-value",
        "ERROR",
        "error",
        "json",
        '{"info": {info}, "severity": {severity}}',
        f'{{"info": "{INFO}", "severity": "ERROR"}}',
    ),
    row("error-text", "ERROR", "error", "text", "{severity}: {info}", f"ERROR: {INFO}"),
    row("error-header", "ERROR", "error", "header", "{severity} {time}", "ERROR 1710073801"),
    row("error-email-subject", "ERROR", "error", "subject", "{severity} {device}", "ERROR E44"),
    row("error-email-body", "ERROR", "error", "body", "{info}\nat {time}", f"{INFO}\nat 1710073801"),
]


def test_the_table_covers_every_callback_type_on_every_channel_it_allows() -> None:
    """URL (GET query, form, JSON, text/plain, header), BATCH_URL and EMAIL (subject, body) for
    every type that offers them: on URL, DATA_ADVANCED takes a JSON POST only (its query and
    header rows sit in one); BATCH_URL carries DATA UPLINK only."""
    covered: dict[str, set[str]] = defaultdict(set)
    for param in ROWS:
        r: Row = param.values[0]
        covered[r.kind].add(r.place)
    url, email = {"get", "form", "json", "text", "header"}, {"subject", "body"}
    assert dict(covered) == {
        "UPLINK": url | email | {"line"},
        "BIDIR": url | email,
        "DATA_ADVANCED": {"get", "json", "header"} | email,
        "STATUS": url | email,
        "REPEATER": url | email,
        "ACKNOWLEDGE": url | email,
        "ERROR": url | email,
    }
    assert len({param.values[0].id for param in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS)
def test_a_callback_renders_exactly_what_its_receiver_gets(world: dict[str, list[str]], row: Row) -> None:
    expected = list(row.expected) if isinstance(row.expected, tuple) else [row.expected]
    assert world.get(row.id, []) == expected  # one request (or mail, or batch) each, exactly this


# -- the world ------------------------------------------------------------------------------------------
@dataclass
class _Traffic:
    """A device type and its one device."""

    device: str
    grammar: str | None = None
    lat: float | None = None
    lng: float | None = None
    downlink_mode: int = 2  # NONE
    downlink_data: str | None = None
    keep_alive: int = 0


TRAFFIC = {
    # created in this order: `data` is device type 1 (its `{deviceTypeId}`)
    "data": _Traffic("AB12CD", DATA_GRAMMAR, lat=43.6, lng=-1.25),
    "quiet": _Traffic("E0", QUIET_GRAMMAR),
    "status": _Traffic("5A7"),
    "repeater": _Traffic("4E9"),
    "ack": _Traffic("ACC", downlink_mode=0, downlink_data="0011223344556677"),
    "hook": _Traffic("B1D", downlink_mode=1),
    "error": _Traffic("E44", keep_alive=1800),
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> dict[str, list[str]]:
    """Every row's callback created, the traffic sent and delivered; what each receiver got, by row."""
    directory = tmp_path_factory.mktemp(f"rendering-{request.param}")
    receiver, inbox = Receiver(), Inbox()
    inbox.controller.start()
    try:
        with fresh_database(request, request.param, directory, sqlite_template) as url:
            settings = make_settings(directory, url).model_copy(
                update={
                    "callback_allow_cidrs": "127.0.0.0/8",
                    "run_deliveries": False,
                    "run_jobs": False,
                    "smtp_host": "127.0.0.1",
                    "smtp_port": inbox.port,
                    "smtp_starttls": False,
                    "smtp_from": "heron@example.com",
                    "downlink_answer_timeout_seconds": 2.0,
                }
            )
            ctx = build_context(settings, prepare(settings, announce_password=False))
            try:
                with TestClient(create_app(settings, ctx)) as client:
                    failures = _run(client, ctx, receiver)
                seen = _received(receiver, inbox, ctx.db)
            finally:
                ctx.db.dispose()
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        inbox.controller.stop()
    return seen | failures


def _run(client: TestClient, ctx: AppContext, receiver: Receiver) -> dict[str, list[str]]:
    """Build the world and drive it; the rows whose callback was refused on save, with why."""
    tenants = make_tenants(ctx.db)
    clock = Clock()
    clock.now = T0
    ctx.uplinks.clock = ctx.deliveries.clock = ctx.downlinks.clock = clock  # type: ignore[assignment]
    # A loaded machine answers late: a generous timeout makes repeats (see `_received`) rare.
    ctx.deliveries.policy = replace(ctx.deliveries.policy, timeout=60.0)
    north, south, east, bare = (
        _station(client, tenants, "1e6ab", 45.5, 4.25),
        _station(client, tenants, "2b", 48.85, 2.35),
        _station(client, tenants, "c0ffee", 43.604, 1.444),
        _station(client, tenants, "d00d", None, None),
    )
    type_ids = _device_types(ctx, tenants)
    refused: dict[str, list[str]] = {}
    for param in ROWS:
        r: Row = param.values[0]
        answer = client.post(
            f"/api/v2/device-types/{type_ids[r.traffic]}/callbacks",
            json=_callback(r, receiver.url),
            headers=tenants.a_admin.headers,
        )
        if answer.status_code != 201:
            refused[r.id] = [f"refused on save: {answer.text}"]
        elif r.traffic == "hook":
            base = f"/api/v2/device-types/{type_ids['hook']}/callbacks/{answer.json()['id']}/downlink"
            assert client.put(base, headers=tenants.a_admin.headers).status_code == 204

    # T0: every message (DATA UPLINK/BIDIR/DATA_ADVANCED, STATUS, REPEATER; the ACKNOWLEDGE and
    # downlink callback ones ask for a downlink; the ERROR one is the device's last word).
    send(client, north, frame("0x00ab12cd", 4095, data=DATA_PAYLOAD, ackRequired=True, rssi=-121.5, snr=7.0))
    send(client, east, frame("0x00ab12cd", 4095, data=DATA_PAYLOAD, ackRequired=True, rssi=-110, snr=12.5, rep=3))
    send(client, bare, frame("e0", 0, data=QUIET_PAYLOAD, rssi=None, snr=None))
    send(
        client,
        north,
        frame("5a7", 12, frameType="KEEPALIVE", data="", battery=3.6, temperature=20, rssi=-127.75, snr=4),
    )
    send(client, north, frame("4e9", 3, frameType="REPEATER", data="", battery=3.25))
    send(client, east, frame("acc", 100, ackRequired=True, rssi=-100.0))
    send(client, east, frame("b1d", 1, data="CAFE", ackRequired=True, rssi=-100.0))
    send(client, north, frame("e44", 5))
    # The dedup window closes: downlinks decided (the downlink callback called), ACC's collected
    # and reported emitted (SERVICE ACKNOWLEDGE); then the outbox sends what is due.
    clock.now = T0 + timedelta(seconds=1.1)
    decide(client)
    [handed] = [d for d in collect(client, east) if d["device"] == "ACC"]
    r = client.post(f"/ingest/sigfox/downlinks/{handed['id']}/report", json={"emitted": True}, headers=east.auth)
    assert r.status_code == 204, r.text
    clock.now = T0 + timedelta(seconds=2.5)  # BATCH_URL has gathered its second
    _drain(client)
    # A late reception of the data message, then DATA_ADVANCED after the horizon.
    clock.now = T0 + timedelta(seconds=5)
    send(client, south, frame("AB12CD", 4095, data=DATA_PAYLOAD, ackRequired=True, rssi=-135.25, snr=-2.5, rep=2))
    clock.now = T0 + timedelta(seconds=31)
    _drain(client)
    # E44 silent past its keep-alive: COMMUNICATION_LOST, the ERROR callbacks.
    clock.now = T0 + timedelta(seconds=1801)
    upkeep(ctx, clock.now)
    _drain(client)
    return refused


def _drain(client: TestClient) -> None:
    for _ in range(10):
        if not rounds(client):
            return
    raise AssertionError("the outbox still had work after 10 rounds")


def _station(client: TestClient, tenants: Tenants, ident: str, lat: float | None, lng: float | None) -> Station:
    body = {"id": ident, "groupId": str(tenants.operator), "name": f"Station {ident}"}
    if lat is not None:
        body |= {"lat": lat, "lng": lng}
    r = client.post("/api/v2/base-stations", json=body, headers=tenants.root_admin.headers)
    assert r.status_code == 201, r.text
    return Station(r.json()["id"], r.json()["secret"])


def _device_types(ctx: AppContext, tenants: Tenants) -> dict[str, int]:
    keyring = Keyring.parse(TEST_KEK)
    ids = {}
    with ctx.db.write() as s:
        contract = contracts.create(s, SYSTEM, group_id=tenants.customer_a, name="Plan", max_tokens=100)
        for name, t in TRAFFIC.items():
            fields = device_types.DeviceTypeFields(
                name=name,
                contract_id=contract.contract.id,
                keep_alive=t.keep_alive,
                downlink_mode=t.downlink_mode,
                downlink_data_string=t.downlink_data,
            )
            if t.grammar:
                fields.payload_type, fields.payload_config = 3, t.grammar
            dt = device_types.create(s, SYSTEM, group_id=tenants.customer_a, network="SIGFOX", fields=fields)
            devices.create_sigfox(
                s,
                SYSTEM,
                keyring,
                identifier=t.device,
                pac="0123456789ABCDEF",
                device_type_id=dt.device_type.id,
                fields=devices.DeviceFields(name=f"{name} device", activable=True, lat=t.lat, lng=t.lng),
            )
            ids[name] = dt.device_type.id
    return ids


def _callback(r: Row, base: str) -> dict[str, Any]:
    callback_type, subtype = KINDS[r.kind]
    body: dict[str, Any] = {
        "channel": r.channel,
        "callbackType": callback_type,
        "callbackSubtype": subtype,
        "enabled": True,
    } | r.extra
    url = f"{base}/{r.id}"
    if r.channel == "EMAIL":
        subject, message = (r.template, "-") if r.place == "subject" else ("-", r.template)
        return body | {"recipient": f"{r.id}@example.com", "subject": subject, "message": message}
    if r.channel == "BATCH_URL":
        return body | {"url": url, "linePattern": r.template}
    if r.place in CONTENT_TYPES:
        return body | {
            "url": url,
            "httpMethod": "POST",
            "contentType": CONTENT_TYPES[r.place],
            "bodyTemplate": r.template,
        }
    if r.place == "get":
        url = f"{url}?{r.template}"
    headers = {"X-Value": r.template} if r.place == "header" else {}
    if r.kind == "DATA_ADVANCED":  # a JSON POST only
        return body | {
            "url": url,
            "headers": headers,
            "httpMethod": "POST",
            "contentType": "application/json",
            "bodyTemplate": "{}",
        }
    return body | {"url": url, "headers": headers, "httpMethod": "GET"}


def _received(receiver: Receiver, inbox: Inbox, db: Database) -> dict[str, list[str]]:
    """What each row's receiver got: the compared part of each request or mail. A request sent
    again under the same `webhook-id` (a retry after an answer the worker did not get in time)
    counts once, when the outbox recorded at least that many attempts of the delivery and the
    text is the same; otherwise it stays, and fails the row."""
    rows = {param.values[0].id: param.values[0] for param in ROWS}
    with db.read() as s:
        attempts = dict(s.execute(select(Delivery.key, Delivery.attempts)).tuples().all())
    seen: dict[str, list[str]] = defaultdict(list)
    sent: dict[str, list[str]] = defaultdict(list)  # by webhook-id: the texts received
    for request in receiver.requests:
        path, _, query = request["path"].partition("?")
        r = rows[path.lstrip("/")]
        if r.place == "get":
            text = query
        elif r.place == "header":
            # http.server reads header bytes as latin-1: back to the bytes, read as UTF-8.
            text = request["headers"]["X-Value"].encode("latin-1").decode()
        else:
            text = request["body"].decode()
        key = request["headers"].get("webhook-id", "")
        sent[key].append(text)
        repeated = len(sent[key]) > 1
        if repeated and attempts.get(key, 0) >= len(sent[key]) and text == sent[key][0]:
            continue  # the same delivery again, after a failed attempt the outbox recorded
        seen[r.id].append(text)
    for _sender, to, mail in inbox.mails:
        [address] = to
        r = rows[address.partition("@")[0]]
        if r.place == "subject":
            seen[r.id].append(str(mail["Subject"]))
        else:
            content = mail.get_content().replace("\r\n", "\n")
            seen[r.id].append(content.removesuffix("\n"))
    return dict(seen)
