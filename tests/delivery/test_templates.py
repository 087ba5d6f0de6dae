"""The callback template engine: variables per callback type, how each value is written and
escaped in each context, and what is refused when a callback is saved."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from heron.delivery.templates import (
    CONTEXTS,
    check_header_name,
    compile_template,
    sample_values,
    variables_for,
)
from heron.errors import InvalidInput

ALL_TYPES = [
    ("DATA", "UPLINK"),
    ("DATA", "BIDIR"),
    ("SERVICE", "STATUS"),
    ("SERVICE", "ACKNOWLEDGE"),
    ("SERVICE", "REPEATER"),
    ("SERVICE", "DATA_ADVANCED"),
    ("ERROR", None),
]


def render(callback: tuple[str, str | None], context: str, text: str, values: dict[str, object]) -> str:
    available = variables_for(*callback, custom_fields=["temp", "door", "label"])
    return compile_template(text, context, available, "bodyTemplate").render(values)


UPLINK = ("DATA", "UPLINK")
BIDIR = ("DATA", "BIDIR")
STATUS = ("SERVICE", "STATUS")
ACK = ("SERVICE", "ACKNOWLEDGE")
REPEATER = ("SERVICE", "REPEATER")
ADVANCED = ("SERVICE", "DATA_ADVANCED")
ERROR = ("ERROR", None)

DUPLICATES = [{"bsId": "1E6AB", "nbRep": 3, "rssi": -121.5, "snr": 12.34}]
LOCATION = {"lat": 43.6, "lng": 1.4, "radius": 1500, "source": 2, "status": 1}

# (callback, context, template, values, exact rendering)
CASES: list[tuple[tuple[str, str | None], str, str, dict[str, object], str]] = [
    # time: integer epoch seconds, from int, float or datetime (naive = UTC)
    (UPLINK, "text", "{time}", {"time": 1700000000}, "1700000000"),
    (UPLINK, "text", "{time}", {"time": 1700000000.9}, "1700000000"),
    (UPLINK, "text", "{time}", {"time": datetime(2023, 11, 14, 22, 13, 20, 999000, tzinfo=UTC)}, "1700000000"),
    (UPLINK, "text", "{time}", {"time": datetime(2023, 11, 14, 22, 13, 20)}, "1700000000"),
    (
        UPLINK,
        "text",
        "{time}",
        {"time": datetime(2023, 11, 15, 0, 13, 20, tzinfo=timezone(timedelta(hours=2)))},
        "1700000000",
    ),
    (ERROR, "json", '{"t": {time}}', {"time": 1700000000}, '{"t": 1700000000}'),
    # rssi / snr / avgSnr: exactly two decimals
    (
        UPLINK,
        "text",
        "{rssi};{snr};{avgSnr}",
        {"rssi": -121.5, "snr": 7, "avgSnr": Decimal("15.256")},
        "-121.50;7.00;15.26",
    ),
    (UPLINK, "text", "{rssi}", {"rssi": "-133"}, "-133.00"),
    (UPLINK, "url", "https://h/?r={rssi}", {"rssi": -121.5}, "https://h/?r=-121.50"),
    (UPLINK, "json", '{"rssi": {rssi}}', {"rssi": -121.5}, '{"rssi": -121.50}'),
    (UPLINK, "json", '{"rssi": "{rssi}"}', {"rssi": -121.5}, '{"rssi": "-121.50"}'),
    (STATUS, "form", "snr={snr}", {"snr": -3.456}, "snr=-3.46"),
    # lat / lng / fixed position / temp / batt: the number as given
    (UPLINK, "text", "{lat},{lng}", {"lat": 43.6, "lng": -1}, "43.6,-1"),
    (UPLINK, "text", "{lat}", {"lat": Decimal("43.60")}, "43.60"),
    (ADVANCED, "json", '{"p": [{fixedLat}, {fixedLng}]}', {"fixedLat": 43.6, "fixedLng": 1.4}, '{"p": [43.6, 1.4]}'),
    (STATUS, "text", "{temp} C {batt} V", {"temp": 21.5, "batt": 3.3}, "21.5 C 3.3 V"),
    (REPEATER, "url", "https://h/?b={batt}", {"batt": 3.05}, "https://h/?b=3.05"),
    (UPLINK, "json", '{"lat": {lat}}', {"lat": float("nan")}, '{"lat": null}'),
    # integers
    (UPLINK, "text", "{seqNumber}", {"seqNumber": 4095}, "4095"),
    (
        ADVANCED,
        "json",
        '{"q": {linkQuality}, "cc": {countryCode}}',
        {"linkQuality": 3, "countryCode": 250},
        '{"q": 3, "cc": 250}',
    ),
    (ACK, "text", "{infoCode}", {"infoCode": 0}, "0"),
    (REPEATER, "text", "{repeatedMsg}/{wrongMsg}", {"repeatedMsg": 12, "wrongMsg": 15}, "12/15"),
    # booleans: lower-case everywhere, bare literals in JSON
    (BIDIR, "text", "{ack} {longPolling}", {"ack": True, "longPolling": False}, "true false"),
    (BIDIR, "url", "https://h/?ack={ack}", {"ack": True}, "https://h/?ack=true"),
    (
        BIDIR,
        "json",
        '{"ack": {ack}, "lp": "{longPolling}"}',
        {"ack": True, "longPolling": False},
        '{"ack": true, "lp": "false"}',
    ),
    (
        ACK,
        "form",
        "a={downlinkAck}&o={downlinkOverusage}",
        {"downlinkAck": False, "downlinkOverusage": True},
        "a=false&o=true",
    ),
    (UPLINK, "text", "{duplicate}", {"duplicate": False}, "false"),
    # data: lower-case hex, whatever the caller holds
    (UPLINK, "text", "{data}", {"data": "0A1B2C"}, "0a1b2c"),
    (UPLINK, "text", "{data}", {"data": b"\x0a\xff"}, "0aff"),
    (UPLINK, "json", '{"data": {data}}', {"data": "CAFE"}, '{"data": "cafe"}'),
    (UPLINK, "text", "[{data}]", {"data": ""}, "[]"),
    # identifiers: as given; an int is upper-case hex
    (
        UPLINK,
        "text",
        "{device}/{station}/{deviceTypeId}",
        {"device": "1A2B3C", "station": "1E6AB", "deviceTypeId": "5F1E"},
        "1A2B3C/1E6AB/5F1E",
    ),
    (UPLINK, "text", "{device}", {"device": 0x1A2B3C}, "1A2B3C"),
    (UPLINK, "json", "[{device}]", {"device": "1A2B3C"}, '["1A2B3C"]'),
    # text variables
    (
        ADVANCED,
        "json",
        '{"lqi": {lqi}, "op": "{operatorName}"}',
        {"lqi": "GOOD", "operatorName": "SIGFOX_France"},
        '{"lqi": "GOOD", "op": "SIGFOX_France"}',
    ),
    (
        ERROR,
        "text",
        "{severity}: {info}",
        {"severity": "ERROR", "info": "No message since 2023"},
        "ERROR: No message since 2023",
    ),
    (
        ACK,
        "json",
        '{"m": "{infoMessage}"}',
        {"infoMessage": 'say "hi"\\ok\nnext'},
        '{"m": "say \\"hi\\"\\\\ok\\nnext"}',
    ),
    (ERROR, "json", '{"i": {info}}', {"info": 'a "b"\n'}, '{"i": "a \\"b\\"\\n"}'),
    (ERROR, "json", '{"i": "{info}"}', {"info": "température ✓"}, '{"i": "température ✓"}'),
    (ERROR, "text", "{info}", {"info": 'a "b"\\\n&c=d'}, 'a "b"\\\n&c=d'),
    # url: percent-encoded, nothing safe; form: quote_plus
    (ERROR, "url", "https://h/e?i={info}", {"info": "a b&c=d/e?f#g+h"}, "https://h/e?i=a%20b%26c%3Dd%2Fe%3Ff%23g%2Bh"),
    (ERROR, "url", "https://h/{device}", {"device": "é/.."}, "https://h/%C3%A9%2F.."),
    (
        ERROR,
        "form",
        "i={info}&s={severity}",
        {"info": "a b&c=d/é\n", "severity": "WARN"},
        "i=a+b%26c%3Dd%2F%C3%A9%0A&s=WARN",
    ),
    # JSON values: raw in a JSON body, JSON text then escaped elsewhere
    (
        ADVANCED,
        "json",
        '{"d": {duplicates}}',
        {"duplicates": DUPLICATES},
        '{"d": [{"bsId":"1E6AB","nbRep":3,"rssi":-121.5,"snr":12.34}]}',
    ),
    (
        ADVANCED,
        "json",
        '{"loc": {computedLocation}}',
        {"computedLocation": LOCATION},
        '{"loc": {"lat":43.6,"lng":1.4,"radius":1500,"source":2,"status":1}}',
    ),
    (
        ADVANCED,
        "json",
        '{"d": "{duplicates}"}',
        {"duplicates": [{"bsId": "1E6AB"}]},
        '{"d": "[{\\"bsId\\":\\"1E6AB\\"}]"}',
    ),
    (ADVANCED, "text", "{duplicates}", {"duplicates": [{"bsId": "1E6AB", "nbRep": 1}]}, '[{"bsId":"1E6AB","nbRep":1}]'),
    (
        ADVANCED,
        "url",
        "https://h/?d={duplicates}",
        {"duplicates": [{"bsId": "1E6AB"}]},
        "https://h/?d=%5B%7B%22bsId%22%3A%221E6AB%22%7D%5D",
    ),
    (ADVANCED, "form", "loc={computedLocation}", {"computedLocation": {"lat": 1}}, "loc=%7B%22lat%22%3A1%7D"),
    # missing values: null in JSON, empty elsewhere
    (
        UPLINK,
        "json",
        '{"rssi": {rssi}, "s": "{station}"}',
        {"rssi": None, "station": None},
        '{"rssi": null, "s": "null"}',
    ),
    (UPLINK, "json", '{"rssi": {rssi}}', {}, '{"rssi": null}'),
    (UPLINK, "url", "https://h/?r={rssi}&s={station}", {"rssi": None}, "https://h/?r=&s="),
    (UPLINK, "form", "r={rssi}", {"rssi": None}, "r="),
    (UPLINK, "text", "[{rssi}]", {"rssi": None}, "[]"),
    (UPLINK, "header", "[{rssi}]", {}, "[]"),
    (ADVANCED, "json", '{"d": {duplicates}}', {"duplicates": None}, '{"d": null}'),
    # decoded payload fields, by the decoded value's type
    (
        UPLINK,
        "json",
        '{"t": {customData#temp}, "d": {customData#door}, "l": {customData#label}}',
        {"customData#temp": -4.5, "customData#door": True, "customData#label": 'A"B'},
        '{"t": -4.5, "d": true, "l": "A\\"B"}',
    ),
    (BIDIR, "json", '{"t": "{customData#temp}"}', {"customData#temp": 21}, '{"t": "21"}'),
    (
        ADVANCED,
        "text",
        "{customData#door}/{customData#label}",
        {"customData#door": False, "customData#label": "x y"},
        "false/x y",
    ),
    (UPLINK, "url", "https://h/?l={customData#label}", {"customData#label": "x y&z"}, "https://h/?l=x%20y%26z"),
    (UPLINK, "json", '{"t": {customData#temp}}', {}, '{"t": null}'),
    # header values: as written, control characters removed
    (UPLINK, "header", "Bearer {device}", {"device": "1A2B"}, "Bearer 1A2B"),
    (ERROR, "header", "x-{info}", {"info": "evil\r\nSet-Cookie: a=b\x00\ttab"}, "x-evilSet-Cookie: a=b\ttab"),
    (ERROR, "header", "x-{info}", {"info": "a\x85b\x9fc\u2028d\u2029e\x7ff"}, "x-abcdef"),  # C1, separators
    # JSON strings with escaped quotes around a variable keep it inside the string
    (
        UPLINK,
        "json",
        '{"x": "a\\"{device}\\"b", "y": {seqNumber}}',
        {"device": "1A", "seqNumber": 7},
        '{"x": "a\\"1A\\"b", "y": 7}',
    ),
    (UPLINK, "json", '{"x": "\\\\", "d": {device}}', {"device": "1A"}, '{"x": "\\\\", "d": "1A"}'),
]


@pytest.mark.parametrize(("callback", "context", "text", "values", "expected"), CASES)
def test_variable_renders_exactly_per_callback_type_and_context(
    callback: tuple[str, str | None], context: str, text: str, values: dict[str, object], expected: str
) -> None:
    assert render(callback, context, text, values) == expected
    if context == "json":
        json.loads(expected)


def test_catalogue_follows_the_sigfox_callback_pages() -> None:
    uplink = {"device", "time", "data", "seqNumber", "deviceTypeId", "station", "rssi", "snr"}
    legacy = {"duplicate", "avgSnr", "lat", "lng", "computedLocation"}  # computedLocation: Heron's
    assert variables_for("DATA", "UPLINK") == uplink | legacy
    assert variables_for("DATA", "BIDIR") == uplink | legacy | {"ack", "longPolling"}
    assert variables_for("SERVICE", "STATUS") == (uplink - {"data"}) | legacy | {"temp", "batt"}
    assert variables_for("SERVICE", "ACKNOWLEDGE") == {
        "device",
        "time",
        "infoCode",
        "infoMessage",
        "downlinkAck",
        "downlinkOverusage",
    }
    assert {"batt", "repeatedMsg", "whitelistDevices", "overRegulMsg"} <= variables_for("SERVICE", "REPEATER")
    assert {"lqi", "linkQuality", "fixedLat", "fixedLng", "operatorName", "countryCode"} <= variables_for(
        "SERVICE", "DATA_ADVANCED"
    )
    assert {"duplicates", "computedLocation", "data", "seqNumber"} <= variables_for("SERVICE", "DATA_ADVANCED")
    assert variables_for("ERROR", None) == {"device", "time", "info", "severity"}


def test_every_catalogue_variable_has_a_sample_and_renders_in_every_context() -> None:
    samples = sample_values()
    for callback in ALL_TYPES:
        names = variables_for(*callback)
        assert names <= samples.keys()
        for context in CONTEXTS - {"json"}:
            text = " ".join(f"{{{name}}}" for name in sorted(names))
            compile_template(text, context, names, "f").render(samples)
        body = "{" + ", ".join(f'"{n}": {{{n}}}, "{n}_q": "{{{n}}}"' for n in sorted(names)) + "}"
        rendered = json.loads(compile_template(body, "json", names, "f").render(samples))
        assert rendered["time"] == 1700000000


@pytest.mark.parametrize(
    ("name", "only_in"),
    [
        ("lqi", ADVANCED),
        ("linkQuality", ADVANCED),
        ("duplicates", ADVANCED),
        ("temp", STATUS),
        ("ack", BIDIR),
        ("infoCode", ACK),
        ("repeatedMsg", REPEATER),
        ("severity", ERROR),
    ],
)
def test_variable_of_another_callback_type_is_refused(name: str, only_in: tuple[str, str | None]) -> None:
    for callback in ALL_TYPES:
        available = variables_for(*callback)
        if callback == only_in:
            assert compile_template(f"x={{{name}}}", "text", available, "url").variables == {name}
            continue
        with pytest.raises(InvalidInput) as caught:
            compile_template(f"x={{{name}}}", "text", available, "url")
        assert caught.value.errors[0].field == "url"
        assert f"{{{name}}}" in caught.value.errors[0].message


def test_unknown_variables_are_all_named_in_the_error() -> None:
    with pytest.raises(InvalidInput) as caught:
        compile_template("{devise} {time} {sequence}", "text", variables_for("DATA", "UPLINK"), "linePattern")
    error = caught.value.errors[0]
    assert error.field == "linePattern"
    assert "unknown variables {devise}, {sequence}" in error.message
    assert "{seqNumber}" in error.message  # says what is offered


def test_custom_data_variable_allowed_only_when_the_grammar_names_it() -> None:
    with pytest.raises(InvalidInput, match=r"\{customData#temp\}"):
        compile_template("{customData#temp}", "text", variables_for("DATA", "UPLINK"), "message")
    with pytest.raises(InvalidInput, match=r"\{customData#hum\}"):
        compile_template("{customData#hum}", "text", variables_for("DATA", "UPLINK", custom_fields=["temp"]), "message")
    available = variables_for("DATA", "UPLINK", custom_fields=["temp"])
    assert compile_template("{customData#temp}", "text", available, "message").render({"customData#temp": 5}) == "5"


def test_custom_data_exists_only_on_callbacks_that_carry_the_payload() -> None:
    assert "customData#temp" in variables_for("SERVICE", "DATA_ADVANCED", custom_fields=["temp"])
    assert "customData#temp" in variables_for("DATA", "BIDIR", custom_fields=["temp"])
    assert "customData#temp" not in variables_for("SERVICE", "STATUS", custom_fields=["temp"])
    assert "customData#temp" not in variables_for("ERROR", None, custom_fields=["temp"])


def test_unknown_callback_type_or_subtype_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidInput) as caught:
        variables_for("EVENT", None)
    assert caught.value.errors[0].field == "callbackType"
    with pytest.raises(InvalidInput) as caught:
        variables_for("DATA", "STATUS")
    assert caught.value.errors[0].field == "callbackSubtype"
    assert "UPLINK, BIDIR" in caught.value.errors[0].message
    with pytest.raises(InvalidInput):
        variables_for("SERVICE", None)


@pytest.mark.parametrize(
    "body",
    [
        '{"device": "{device}"',  # unclosed object
        '{"device": {device} "time": {time}}',  # missing comma
        '{"device": "{device}}',  # unclosed string
        "{device}, {time}",  # two values, not one document
        "",
        '{"a": tru}',
    ],
)
def test_body_that_is_not_json_once_rendered_is_refused(body: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        compile_template(body, "json", variables_for("DATA", "UPLINK"), "bodyTemplate")
    assert caught.value.errors[0].field == "bodyTemplate"


def test_bare_variable_becomes_a_json_value_and_quoted_one_stays_text() -> None:
    available = variables_for("DATA", "BIDIR")
    template = compile_template(
        '{"seq": {seqNumber}, "seqText": "{seqNumber}", "ack": {ack}, "device": {device}, "msg": "id={device};"}',
        "json",
        available,
        "bodyTemplate",
    )
    parsed = json.loads(template.render({"seqNumber": 12, "ack": False, "device": "1A2B"}))
    assert parsed == {"seq": 12, "seqText": "12", "ack": False, "device": "1A2B", "msg": "id=1A2B;"}
    assert template.variables == {"seqNumber", "ack", "device"}


def test_json_structure_braces_are_not_variables() -> None:
    template = compile_template('{"a": {}, "b": [{"c": {time}}]}', "json", variables_for("ERROR", None), "body")
    assert template.variables == {"time"}
    assert template.render({"time": 5}) == '{"a": {}, "b": [{"c": 5}]}'


@pytest.mark.parametrize(
    ("text", "context"),
    [
        ("{device", "text"),
        ("device}", "text"),
        ("https://h/?d={device", "url"),
        ("a={ device }", "form"),
        ("{{device}}", "text"),
        ("Bearer {", "header"),
        ('{"a": "{device"}', "json"),
        ('{"a": "x}"}', "json"),
        ('{"a": {device}', "json"),
        ("{device-id}", "text"),
    ],
)
def test_unbalanced_braces_are_refused(text: str, context: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        compile_template(text, context, variables_for("DATA", "UPLINK"), "field")
    assert caught.value.errors[0].field == "field"


def test_header_value_template_with_a_line_break_is_refused() -> None:
    for text in ("a\r\nX-Injected: 1", "a\nb", "{device}\r", "a\x85b", "{device}\u2028"):
        with pytest.raises(InvalidInput, match="line break"):
            compile_template(text, "header", variables_for("DATA", "UPLINK"), "headers.X-Device")


@pytest.mark.parametrize("name", ["X-Device", "Authorization", "authorization", "x-api-key", "X_Token"])
def test_custom_and_authorization_header_names_are_accepted(name: str) -> None:
    check_header_name(name, "headers")


@pytest.mark.parametrize(
    "name",
    ["Content-Type", "host", "User-Agent", "Content-Length", "Transfer-Encoding", "Cookie", "Connection"],
)
def test_standard_header_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match="only Authorization") as caught:
        check_header_name(name, "headers")
    assert caught.value.errors[0].field == "headers"


@pytest.mark.parametrize("name", ["X-{device}", "{device}", "X-}", "", "X Device", "X-Dev:ice", "X-\r\nA", "Prénom"])
def test_header_names_with_variables_or_non_token_characters_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_header_name(name, "headers")


def test_unknown_context_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="context"):
        compile_template("x", "html", frozenset(), "f")


def test_template_without_variables_renders_its_text() -> None:
    template = compile_template("https://h/cb", "url", frozenset(), "url")
    assert template.variables == frozenset()
    assert template.render({}) == "https://h/cb"


def test_values_the_template_does_not_use_are_ignored() -> None:
    template = compile_template("{device};{time}", "text", variables_for("DATA", "UPLINK"), "linePattern")
    assert template.variables == {"device", "time"}
    assert template.render({"device": "1A", "time": 1, "data": "ff", "unrelated": object()}) == "1A;1"


def test_a_bool_variable_given_text_is_a_programming_error() -> None:
    template = compile_template("{ack}", "text", variables_for("DATA", "BIDIR"), "f")
    with pytest.raises(TypeError):
        template.render({"ack": "false"})
