"""The one template engine of callbacks: which `{name}` variables each callback type offers, how
each value is written, and how it is escaped for the place it lands in (URL, form body, JSON
body, plain text, header value). Templates are checked when a callback is saved and compiled
once; rendering is then a join over precomputed chunks, cheap enough for every message.

Variables (`variables_for`), following the public Sigfox callback pages:

- DATA UPLINK: `device`, `time`, `data`, `seqNumber`, `deviceTypeId`, `station`, `rssi`, `snr`,
  and the legacy `duplicate`, `avgSnr`, `lat`, `lng`; Heron adds `computedLocation` (as in
  DATA_ADVANCED, known when the dedup window closes).
- DATA BIDIR: UPLINK's plus `ack`, `longPolling`.
- SERVICE STATUS: UPLINK's without `data` (a status frame carries no user payload) plus `temp`,
  `batt`.
- SERVICE ACKNOWLEDGE: `device`, `time`, `infoCode`, `infoMessage`, `downlinkAck`,
  `downlinkOverusage`.
- SERVICE REPEATER: `device`, `time`, `batt`, `whitelistDevices`, `repeatedMsg`,
  `unwantedDevices`, `unwantedMsg`, `wrongMsg`, `overRegulMsg`.
- SERVICE DATA_ADVANCED: `device`, `time`, `data`, `seqNumber`, `lqi`, `linkQuality`, `fixedLat`,
  `fixedLng`, `operatorName`, `countryCode`, `duplicates`, `computedLocation`.
- ERROR (any or no subtype): `device`, `time`, `info`, `severity`.
- `customData#<name>` for each field of the device type's payload grammar, on the types that
  carry the uplink payload (DATA UPLINK, DATA BIDIR, SERVICE DATA_ADVANCED).

How a value is written (the same in every context, before escaping):

- `time`: integer epoch seconds (`1700000000`); an int, a float (truncated) or a datetime
  (naive ones are taken as UTC).
- `rssi`, `snr`, `avgSnr`: exactly 2 decimals (`-121.50`, `7.00`).
- `lat`, `lng`, `fixedLat`, `fixedLng`, `temp`, `batt`: the number as given (`43.6`, `3`,
  `Decimal("43.60")` -> `43.60`); NaN and infinities count as missing.
- integers (`seqNumber`, `infoCode`, `linkQuality`, `countryCode`, repeater counters): decimal.
- booleans (`ack`, `longPolling`, `duplicate`, `downlinkAck`, `downlinkOverusage`): `true` or
  `false`, lower-case; anything but a bool or an int is a programming error (TypeError).
- `data`: hex, lower-case, as Sigfox sends it (bytes are hex-encoded).
- `device`, `deviceTypeId`, `station`: as given (Heron normalizes identifiers upper-case at the
  edge); an int is written as upper-case hex.
- `lqi`, `operatorName`, `infoMessage`, `info`, `severity`: the text as given.
- `duplicates`, `computedLocation`: compact JSON text of the value (a list or dict), non-ASCII
  kept as is.
- `customData#<name>`: by the Python type of the decoded value: bool -> `true`/`false`, int ->
  decimal, float -> shortest repr, text as is.
- Missing (None, or absent from the mapping passed to `render`): `null` in the `json` context
  (the literal `null` as a bare value, the text `null` inside a JSON string, as Sigfox's textual
  substitution gives), and the empty string in every other context.

Contexts (`CONTEXTS`) and escaping:

- `url`: each value percent-encoded with nothing kept safe (`/`, `&`, `=`, `?`, space -> `%2F`,
  `%26`, `%3D`, `%3F`, `%20`; UTF-8 bytes for non-ASCII). Literal text is left untouched.
- `form` (application/x-www-form-urlencoded body): `quote_plus`, so a space is `+`, `&` is `%26`.
- `json`: the body must be valid JSON once each variable is replaced by a sample value.
  Inside a JSON string literal a value is JSON-string-escaped without the quotes (`"` -> `\\"`,
  backslash doubled, newline -> `\\n`, non-ASCII kept). A variable standing as a bare JSON value
  is written as a JSON literal: numbers and booleans unquoted (`-121.50`, `true`), text quoted,
  `duplicates` / `computedLocation` as raw JSON, missing as `null`. Which of the two applies is
  decided at compile time by scanning the template's quotes (with backslash escapes).
- `text` (text/plain bodies, e-mail bodies, BATCH_URL lines): values as written above.
- `header` (header values, and an e-mail subject, which is a header too): values as written
  above with every control character but TAB removed (C0, DEL and C1, and the line and paragraph
  separators U+2028, U+2029), so a value can never start a new header;
  a template whose own text holds a line break is refused on save.

Braces: `{name}` is a variable. Any other `{` or `}` is refused on save ("unbalanced"), except in
the `json` context outside string literals, where braces are the JSON object's own. There is no
escape for a literal brace (Sigfox has none either). Header names never take variables:
`check_header_name` refuses them, and standard HTTP headers other than `Authorization`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import quote, quote_plus

from heron.errors import InvalidInput

__all__ = ["CONTEXTS", "Template", "check_header_name", "compile_template", "sample_values", "variables_for"]

CONTEXTS: frozenset[str] = frozenset({"url", "form", "json", "text", "header"})

CUSTOM_PREFIX = "customData#"

_Text = Callable[[object], "str | None"]
_Formatter = Callable[[object], str]

# --- the catalogue -------------------------------------------------------------------------------

_ID, _HEX, _TIME, _INT, _DEC2, _NUMBER, _BOOL, _TEXT, _JSON, _ANY = (
    "id",
    "hex",
    "time",
    "int",
    "dec2",
    "number",
    "bool",
    "text",
    "json",
    "any",
)

_KINDS: dict[str, str] = {
    "device": _ID,
    "deviceTypeId": _ID,
    "station": _ID,
    "data": _HEX,
    "time": _TIME,
    "seqNumber": _INT,
    "linkQuality": _INT,
    "countryCode": _INT,
    "infoCode": _INT,
    "whitelistDevices": _INT,
    "repeatedMsg": _INT,
    "unwantedDevices": _INT,
    "unwantedMsg": _INT,
    "wrongMsg": _INT,
    "overRegulMsg": _INT,
    "rssi": _DEC2,
    "snr": _DEC2,
    "avgSnr": _DEC2,
    "lat": _NUMBER,
    "lng": _NUMBER,
    "fixedLat": _NUMBER,
    "fixedLng": _NUMBER,
    "temp": _NUMBER,
    "batt": _NUMBER,
    "ack": _BOOL,
    "longPolling": _BOOL,
    "duplicate": _BOOL,
    "downlinkAck": _BOOL,
    "downlinkOverusage": _BOOL,
    "lqi": _TEXT,
    "operatorName": _TEXT,
    "infoMessage": _TEXT,
    "info": _TEXT,
    "severity": _TEXT,
    "duplicates": _JSON,
    "computedLocation": _JSON,
}

_UPLINK = frozenset(
    {
        "device",
        "time",
        "data",
        "seqNumber",
        "deviceTypeId",
        "station",
        "rssi",
        "snr",
        "duplicate",
        "avgSnr",
        "lat",
        "lng",
        "computedLocation",
    }
)
_CATALOGUE: dict[tuple[str, str], frozenset[str]] = {
    ("DATA", "UPLINK"): _UPLINK,
    ("DATA", "BIDIR"): _UPLINK | {"ack", "longPolling"},
    ("SERVICE", "STATUS"): (_UPLINK - {"data"}) | {"temp", "batt"},
    ("SERVICE", "ACKNOWLEDGE"): frozenset(
        {"device", "time", "infoCode", "infoMessage", "downlinkAck", "downlinkOverusage"}
    ),
    ("SERVICE", "REPEATER"): frozenset(
        {
            "device",
            "time",
            "batt",
            "whitelistDevices",
            "repeatedMsg",
            "unwantedDevices",
            "unwantedMsg",
            "wrongMsg",
            "overRegulMsg",
        }
    ),
    ("SERVICE", "DATA_ADVANCED"): frozenset(
        {
            "device",
            "time",
            "data",
            "seqNumber",
            "lqi",
            "linkQuality",
            "fixedLat",
            "fixedLng",
            "operatorName",
            "countryCode",
            "duplicates",
            "computedLocation",
        }
    ),
}
_ERROR = frozenset({"device", "time", "info", "severity"})
_CARRIES_PAYLOAD = frozenset({("DATA", "UPLINK"), ("DATA", "BIDIR"), ("SERVICE", "DATA_ADVANCED")})

_CUSTOM_NAME = r"[A-Za-z0-9_.\-]+"
_VARIABLE = re.compile(r"\{([A-Za-z][A-Za-z0-9_]*(?:#" + _CUSTOM_NAME + r")?)\}")
_CUSTOM_FIELD = re.compile(_CUSTOM_NAME)


def variables_for(callback_type: str, subtype: str | None, *, custom_fields: Iterable[str] = ()) -> frozenset[str]:
    """The variable names a callback of this type and subtype may use (enum names: "DATA",
    "UPLINK", ...). `custom_fields` are the device type's payload grammar field names; they
    become `customData#<name>` on the types that carry the uplink payload."""
    if callback_type == "ERROR":
        return _ERROR
    if callback_type not in ("DATA", "SERVICE"):
        raise InvalidInput.field(
            "callbackType", f"unknown callback type {callback_type!r}; expected DATA, SERVICE or ERROR"
        )
    key = (callback_type, subtype or "")
    names = _CATALOGUE.get(key)
    if names is None:
        expected = ", ".join(s for t, s in _CATALOGUE if t == callback_type)
        raise InvalidInput.field(
            "callbackSubtype", f"{callback_type} callbacks take the subtype {expected}, got {subtype!r}"
        )
    if key not in _CARRIES_PAYLOAD:
        return names
    custom = []
    for field in custom_fields:
        if not _CUSTOM_FIELD.fullmatch(field):
            raise ValueError(f"payload field name {field!r} cannot be a template variable")
        custom.append(CUSTOM_PREFIX + field)
    return names | frozenset(custom) if custom else names


def _kind(name: str) -> str:
    """The name's kind; an unknown name is refused after the scan, so any kind will do for it."""
    return _ANY if name.startswith(CUSTOM_PREFIX) else _KINDS.get(name, _TEXT)


# --- writing a value -----------------------------------------------------------------------------


def _id_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return format(value, "X")
    return str(value)


def _hex_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value).lower()


def _time_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return str(math.floor(moment.timestamp()))
    if isinstance(value, int | float | Decimal | str):
        return str(int(value))
    raise TypeError(f"time must be epoch seconds or a datetime, got {type(value).__name__}")


def _int_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, int | float | Decimal | str):
        return str(int(value))
    raise TypeError(f"expected an integer, got {type(value).__name__}")


def _finite(value: object) -> float | Decimal | int | None:
    """The value as a number, None when it is missing, NaN or infinite."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("expected a number, got a bool")
    if isinstance(value, str):
        value = Decimal(value)
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    raise TypeError(f"expected a number, got {type(value).__name__}")


def _dec2_text(value: object) -> str | None:
    number = _finite(value)
    return None if number is None else format(number, ".2f")


def _number_text(value: object) -> str | None:
    number = _finite(value)
    if number is None:
        return None
    if isinstance(number, float):
        return repr(number)
    if isinstance(number, Decimal):
        return format(number, "f")
    return str(number)


def _bool_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, int):  # bool is an int
        return "true" if value else "false"
    raise TypeError(f"expected a bool, got {type(value).__name__}")


def _plain_text(value: object) -> str | None:
    return None if value is None else str(value)


def _json_text(value: object) -> str | None:
    if value is None:
        return None
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _any_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return _number_text(value)
    return _json_text(value)


_TEXTS: dict[str, _Text] = {
    _ID: _id_text,
    _HEX: _hex_text,
    _TIME: _time_text,
    _INT: _int_text,
    _DEC2: _dec2_text,
    _NUMBER: _number_text,
    _BOOL: _bool_text,
    _TEXT: _plain_text,
    _JSON: _json_text,
    _ANY: _any_text,
}

# Kinds whose written form is already a JSON literal when it stands bare in a JSON body.
_BARE_AS_IS = frozenset({_TIME, _INT, _DEC2, _NUMBER, _BOOL, _JSON})

# --- escaping by context -------------------------------------------------------------------------

# Removed from header values: the C0 controls but TAB, DEL, the C1 controls and U+2028/U+2029,
# which covers every character str.splitlines() breaks on (the e-mail package refuses those).
_CONTROL = {c: None for c in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029] if c != 0x09}


def _url(text: str) -> str:
    return quote(text, safe="")


def _form(text: str) -> str:
    return quote_plus(text, safe="")


def _json_in_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _header(text: str) -> str:
    return text.translate(_CONTROL)


def _escaping(to_text: _Text, escape: Callable[[str], str] | None, null: str) -> _Formatter:
    if escape is None:

        def plain(value: object) -> str:
            text = to_text(value)
            return null if text is None else text

        return plain

    def escaped(value: object) -> str:
        text = to_text(value)
        return null if text is None else escape(text)

    return escaped


def _bare_json(kind: str, to_text: _Text) -> _Formatter:
    if kind in _BARE_AS_IS:
        return _escaping(to_text, None, "null")
    if kind == _ANY:

        def any_literal(value: object) -> str:
            text = to_text(value)
            if text is None:
                return "null"
            return json.dumps(text, ensure_ascii=False) if isinstance(value, str) else text

        return any_literal

    def quoted(value: object) -> str:
        text = to_text(value)
        return "null" if text is None else json.dumps(text, ensure_ascii=False)

    return quoted


# (kind, placement) -> formatter; placements are the contexts, with `json` split in two.
_BARE = "json-bare"
_FORMATTERS: dict[tuple[str, str], _Formatter] = {}
for _k, _t in _TEXTS.items():
    _FORMATTERS[_k, "url"] = _escaping(_t, _url, "")
    _FORMATTERS[_k, "form"] = _escaping(_t, _form, "")
    _FORMATTERS[_k, "text"] = _escaping(_t, None, "")
    _FORMATTERS[_k, "header"] = _escaping(_t, _header, "")
    _FORMATTERS[_k, "json"] = _escaping(_t, _json_in_string, "null")
    _FORMATTERS[_k, _BARE] = _bare_json(_k, _t)

# --- samples -------------------------------------------------------------------------------------

_SAMPLES: dict[str, object] = {
    "device": "1A2B3C",
    "deviceTypeId": "5F1E2D3C",
    "station": "1E6AB",
    "data": "0a1b2c3d",
    "time": 1700000000,
    "seqNumber": 1234,
    "linkQuality": 2,
    "countryCode": 250,
    "infoCode": 0,
    "whitelistDevices": 0,
    "repeatedMsg": 12,
    "unwantedDevices": 1,
    "unwantedMsg": 1,
    "wrongMsg": 0,
    "overRegulMsg": 0,
    "rssi": -121.5,
    "snr": 12.34,
    "avgSnr": 15.2,
    "lat": 43.6,
    "lng": 1.4,
    "fixedLat": 43.6,
    "fixedLng": 1.4,
    "temp": 21.5,
    "batt": 3.3,
    "ack": True,
    "longPolling": False,
    "duplicate": False,
    "downlinkAck": True,
    "downlinkOverusage": False,
    "lqi": "GOOD",
    "operatorName": "SIGFOX_France",
    "infoMessage": "Acked",
    "info": "No message received since 2023-11-14 22:13:20",
    "severity": "ERROR",
    "duplicates": [{"bsId": "1E6AB", "nbRep": 3, "rssi": -121.5, "snr": 12.34}],
    "computedLocation": {"lat": 43.6, "lng": 1.4, "radius": 1500, "source": 2, "status": 1},
}
_CUSTOM_SAMPLE: object = 0


def sample_values(names: Iterable[str] = ()) -> dict[str, object]:
    """A plausible value for every catalogue variable, and for the given `customData#` names:
    for previews and for checking that a JSON body stays JSON once rendered."""
    samples = dict(_SAMPLES)
    samples.update((n, _CUSTOM_SAMPLE) for n in names if n.startswith(CUSTOM_PREFIX))
    return samples


# --- compiling and rendering ---------------------------------------------------------------------


class Template:
    """A compiled template: literal chunks interleaved with (variable, formatter) steps."""

    __slots__ = ("_head", "_steps", "context", "text", "variables")

    def __init__(self, text: str, context: str, head: str, steps: tuple[tuple[str, _Formatter, str], ...]) -> None:
        self.text = text
        self.context = context
        self._head = head
        self._steps = steps
        self.variables: frozenset[str] = frozenset(name for name, _, _ in steps)

    def render(self, values: Mapping[str, object]) -> str:
        """The template with each variable written and escaped; absent names count as None."""
        out = [self._head]
        get = values.get
        for name, formatter, literal in self._steps:
            out.append(formatter(get(name)))
            out.append(literal)
        return "".join(out)

    def __repr__(self) -> str:
        return f"Template({self.text!r}, context={self.context!r})"


def compile_template(text: str, context: str, available: frozenset[str], field: str) -> Template:
    """Check a template on save and compile it. Refuses (InvalidInput naming `field`) unknown
    variables, unbalanced braces, line breaks in a header value, and in the `json` context a
    body that is not JSON once each variable is replaced by a sample value."""
    if context not in CONTEXTS:
        raise ValueError(f"unknown template context {context!r}; expected one of {sorted(CONTEXTS)}")
    is_json = context == "json"
    if context == "header" and "".join(text.splitlines()) != text:  # CR, LF, NEL, U+2028 ...
        raise InvalidInput.field(field, "a header value cannot contain a line break")

    chunks: list[str] = []  # literal text; one more chunk than variables
    found: list[tuple[str, str]] = []  # (name, placement) of each variable, in order
    literal: list[str] = []
    in_string = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "{":
            match = _VARIABLE.match(text, i)
            if match is not None:
                chunks.append("".join(literal))
                literal = []
                found.append((match.group(1), ("json" if in_string else _BARE) if is_json else context))
                i = match.end()
                continue
            if not is_json or in_string or (i + 1 < n and (text[i + 1].isalnum() or text[i + 1] == "#")):
                raise InvalidInput.field(
                    field, f"unbalanced brace: '{{' at character {i + 1} does not open a variable like {{device}}"
                )
        elif c == "}":
            if not is_json or in_string:
                raise InvalidInput.field(field, f"unbalanced brace: '}}' at character {i + 1} closes no variable")
        elif is_json and c == '"':
            in_string = not in_string
        elif is_json and in_string and c == "\\" and i + 1 < n:
            literal.append(text[i : i + 2])
            i += 2
            continue
        literal.append(c)
        i += 1
    chunks.append("".join(literal))
    steps = tuple(
        (name, _FORMATTERS[_kind(name), placement], chunk)
        for (name, placement), chunk in zip(found, chunks[1:], strict=True)
    )

    used = frozenset(name for name, _, _ in steps)
    unknown = sorted(used - available)
    if unknown:
        offered = ", ".join(f"{{{v}}}" for v in sorted(available)) or "none"
        plural = "s" if len(unknown) > 1 else ""
        raise InvalidInput.field(
            field,
            f"unknown variable{plural} {', '.join(f'{{{v}}}' for v in unknown)}; this callback offers {offered}",
        )

    template = Template(text, context, chunks[0], steps)
    if is_json:
        try:
            json.loads(template.render(sample_values(used)))
        except json.JSONDecodeError as exc:
            raise InvalidInput.field(
                field,
                f"not valid JSON once each variable is replaced by a sample value: {exc.msg}"
                f" (line {exc.lineno}, column {exc.colno})",
            ) from None
    return template


# --- header names --------------------------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_STANDARD_HEADERS = frozenset(
    {
        "accept",
        "accept-charset",
        "accept-datetime",
        "accept-encoding",
        "accept-language",
        "access-control-request-headers",
        "access-control-request-method",
        "cache-control",
        "connection",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "cookie",
        "date",
        "expect",
        "forwarded",
        "from",
        "host",
        "http2-settings",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "keep-alive",
        "max-forwards",
        "origin",
        "pragma",
        "prefer",
        "proxy-authorization",
        "proxy-connection",
        "range",
        "referer",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "via",
        "warning",
    }
)


def check_header_name(name: str, field: str) -> None:
    """Validation on save of a custom header's name: a plain HTTP token, no variables, and no
    standard HTTP header except `Authorization` (Heron sets those itself)."""
    if "{" in name or "}" in name:
        raise InvalidInput.field(field, f"header names cannot contain variables, got {name!r}")
    if not _TOKEN.fullmatch(name):
        raise InvalidInput.field(field, f"{name!r} is not a valid header name (letters, digits and -_.!#$%&'*+^`|~)")
    if name.lower() in _STANDARD_HEADERS:
        raise InvalidInput.field(field, f"standard header {name!r} cannot be set on a callback; only Authorization can")
