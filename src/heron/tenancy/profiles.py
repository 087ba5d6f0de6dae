"""The catalog of profiles: named bundles of actions. A role (a profile held on a group)
applies to that group and all its subgroups. docs/PROFILES.md is generated from this table."""

from __future__ import annotations

from dataclasses import dataclass

# Every action Heron checks. `<object>:read` lets a caller see objects, `<object>:write`
# create, change and delete them.
ACTIONS: dict[str, str] = {
    "group:read": "see groups",
    "group:write": "create, rename, move and delete subgroups",
    "user:read": "see users holding roles in the group",
    "user:write": "create, change, disable and delete users; grant roles",
    "api_user:read": "see API users",
    "api_user:write": "create API users, renew and revoke their credentials",
    "audit:read": "read the audit log",
    "contract:read": "see contracts",
    "contract:write": "create contracts and allocate them",
    "device_type:read": "see device types",
    "device_type:write": "create, change and delete device types",
    "device:read": "see devices",
    "device:write": "register, change, transfer and delete devices; run bulk jobs",
    "message:read": "read messages, events and downlinks",
    "message:write": "send downlinks",
    "callback:read": "see callbacks and undelivered callbacks",
    "callback:write": "create and change callbacks, retry deliveries",
    "base_station:read": "see base stations and gateways",
    "base_station:write": "create, change and delete base stations and gateways, rotate their credentials",
}

_READS = frozenset(a for a in ACTIONS if a.endswith(":read"))
# Base stations and gateways are the operator's network: a station delivers the frames of every
# device in its group's subtree, so the right to own one is apart from a customer's ADMIN.
_NETWORK = frozenset({"base_station:write"})
_ALL = frozenset(ACTIONS) - _NETWORK
_DEVICE_R = frozenset(
    {"group:read", "contract:read", "device_type:read", "device:read", "message:read", "callback:read"}
)


@dataclass(frozen=True)
class Profile:
    id: str
    name: str
    description: str
    actions: frozenset[str]


PROFILES: dict[str, Profile] = {
    p.id: p
    for p in [
        Profile(
            "ADMIN",
            "Administrator",
            "Everything in the group and its subgroups but owning base stations (NETWORK_OPERATOR).",
            _ALL,
        ),
        Profile(
            "LIMITED_ADMIN",
            "Limited administrator",
            "Everything but users and API access (nor base stations).",
            _ALL - {"user:read", "user:write", "api_user:read", "api_user:write"},
        ),
        Profile(
            "DEVICE_MANAGER_R",
            "Device manager [R]",
            "Read devices, device types, contracts and messages.",
            _DEVICE_R,
        ),
        Profile(
            "DEVICE_MANAGER_W",
            "Device manager [W]",
            "Device manager [R], plus registering and changing devices and device types, bulk jobs and downlinks.",
            _DEVICE_R | {"device_type:write", "device:write", "message:write"},
        ),
        Profile(
            "CALLBACK_MANAGER",
            "Callback manager",
            "Read device types and messages; create and change callbacks and retry deliveries.",
            frozenset({"group:read", "device_type:read", "message:read", "callback:read", "callback:write"}),
        ),
        Profile(
            "API_ONLY",
            "API only (data)",
            "For integration servers: read devices and messages, send downlinks.",
            frozenset({"group:read", "device_type:read", "device:read", "message:read", "message:write"}),
        ),
        Profile(
            "OBSERVER",
            "Observer",
            "Read everything except users, API access and the audit log.",
            _READS - {"user:read", "api_user:read", "audit:read"},
        ),
        Profile(
            "NETWORK_OPERATOR",
            "Network operator",
            "Own base stations and gateways: create, change and delete them, rotate their credentials. A "
            "station serves only the devices in its group's subtree. Held by the root group's first "
            "administrator.",
            frozenset({"group:read", "base_station:read"}) | _NETWORK,
        ),
    ]
}


def actions_of(profile_ids: frozenset[str] | set[str] | list[str]) -> frozenset[str]:
    out: set[str] = set()
    for pid in profile_ids:
        out |= PROFILES[pid].actions
    return frozenset(out)


def profiles_markdown() -> str:
    """The profile x action table for docs/PROFILES.md."""
    ids = list(PROFILES)
    lines = [
        "# Profiles",
        "",
        "A user or API user holds profiles on a group; they apply to that group and all its subgroups.",
        "Objects in groups the caller holds no profile on answer 404 and never appear in lists or counts;",
        "an object the caller can see but lacks the action for answers 403.",
        "",
        "| profile | name | description |",
        "|---|---|---|",
    ]
    lines += [f"| `{p.id}` | {p.name} | {p.description} |" for p in PROFILES.values()]
    lines += ["", "| action | meaning | " + " | ".join(f"`{i}`" for i in ids) + " |"]
    lines.append("|---|---|" + "---|" * len(ids))
    for action, meaning in ACTIONS.items():
        marks = " | ".join("x" if action in PROFILES[i].actions else "" for i in ids)
        lines.append(f"| `{action}` | {meaning} | {marks} |")
    lines += [
        "",
        "No escalation: a caller may grant a set of profiles on a group only when every action those",
        "profiles carry is one the caller itself holds on that group, and only inside its own subtree.",
        "",
    ]
    return "\n".join(lines)
