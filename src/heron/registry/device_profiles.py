"""LoRaWAN device profiles (the Senet `profId`): the radio settings a network server needs.

Regional rules (LoRaWAN Regional Parameters RP002): EU868 RX2 defaults to 869.525 MHz / DR0 and
takes DR0-DR7 and a frequency in 863-870 MHz; US915 RX2 defaults to 923.3 MHz / DR8, takes
DR8-DR13 and one of the eight downlink channels 923.3 + 0.6 k MHz, and needs the sub-band (1-8:
eight uplink channels of 125 kHz plus one of 500 kHz) the gateways listen on. EU868 has no
sub-bands. Changing the region without new RX2 values resets them to the new region's defaults."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from heron.db.base import utcnow
from heron.errors import Conflict, InvalidInput, NotFound
from heron.registry.models import DeviceProfile, DeviceType
from heron.tenancy import audit
from heron.tenancy.access import Actor
from heron.tenancy.groups import register_content_check
from heron.tenancy.models import Group
from heron.tenancy.owned import check_name, in_groups, owning_group

register_content_check(
    "device profiles", lambda gid: select(DeviceProfile.id).where(DeviceProfile.group_id == gid).limit(1)
)


@dataclass(frozen=True)
class Region:
    name: str
    rx2_default_frequency: int  # Hz
    rx2_default_data_rate: int
    rx2_data_rates: range
    sub_bands: bool

    def frequency_ok(self, hz: int) -> bool:
        if self.name == "US915":
            return hz in {923_300_000 + 600_000 * k for k in range(8)}
        return 863_000_000 <= hz <= 870_000_000


REGIONS: dict[str, Region] = {
    "EU868": Region("EU868", 869_525_000, 0, range(0, 8), sub_bands=False),
    "US915": Region("US915", 923_300_000, 8, range(8, 14), sub_bands=True),
}
# MAC version -> Regional Parameters revisions that go with it (the first is the default).
MAC_VERSIONS: dict[str, tuple[str, ...]] = {
    "1.0.0": ("A",),
    "1.0.1": ("A",),
    "1.0.2": ("B", "A"),
    "1.0.3": ("A",),
    "1.0.4": ("RP002-1.0.3", "RP002-1.0.0", "RP002-1.0.1", "RP002-1.0.2", "RP002-1.0.4"),
    "1.1.0": ("RP002-1.0.3", "A", "B", "RP002-1.0.0", "RP002-1.0.1", "RP002-1.0.2", "RP002-1.0.4"),
}
CLASSES = ("A", "B", "C")


@dataclass
class ProfileView:
    profile: DeviceProfile
    group: Group


@dataclass
class ProfileFields:
    """What a create or update may set; None = not given."""

    name: str | None = None
    region: str | None = None
    mac_version: str | None = None
    reg_params_revision: str | None = None
    device_class: str | None = None
    rx1_delay: int | None = None
    rx2_data_rate: int | None = None
    rx2_frequency_mhz: float | None = None
    adr_enabled: bool | None = None
    sub_band: int | None = None


def mhz_to_hz(mhz: float) -> int:
    return round(mhz * 1_000_000)


def _apply(profile: DeviceProfile, f: ProfileFields, *, unset_sub_band: bool = False) -> dict[str, object]:
    """Set the given fields, then check the whole profile; raises InvalidInput naming the field."""
    changes: dict[str, object] = {}
    if f.name is not None:
        profile.name = changes["name"] = check_name(f.name)  # type: ignore[assignment]
    if f.region is not None:
        if f.region not in REGIONS:
            raise InvalidInput.field("region", f"must be one of {', '.join(REGIONS)}")
        if f.region != profile.region:
            region = REGIONS[f.region]
            profile.rx2_data_rate = region.rx2_default_data_rate
            profile.rx2_frequency = region.rx2_default_frequency
            if not region.sub_bands:
                profile.sub_band = None
        profile.region = changes["region"] = f.region  # type: ignore[assignment]
    if f.mac_version is not None:
        if f.mac_version not in MAC_VERSIONS:
            raise InvalidInput.field("macVersion", f"must be one of {', '.join(MAC_VERSIONS)}")
        if f.mac_version != profile.mac_version and f.reg_params_revision is None:
            profile.reg_params_revision = MAC_VERSIONS[f.mac_version][0]
        profile.mac_version = changes["macVersion"] = f.mac_version  # type: ignore[assignment]
    if f.reg_params_revision is not None:
        profile.reg_params_revision = changes["regParamsRevision"] = f.reg_params_revision  # type: ignore[assignment]
    if f.device_class is not None:
        profile.device_class = changes["deviceClass"] = f.device_class  # type: ignore[assignment]
    if f.rx1_delay is not None:
        profile.rx1_delay = changes["rx1Delay"] = f.rx1_delay  # type: ignore[assignment]
    if f.rx2_data_rate is not None:
        profile.rx2_data_rate = changes["rx2DataRate"] = f.rx2_data_rate  # type: ignore[assignment]
    if f.rx2_frequency_mhz is not None:
        profile.rx2_frequency = mhz_to_hz(f.rx2_frequency_mhz)
        changes["rx2Frequency"] = f.rx2_frequency_mhz
    if f.adr_enabled is not None:
        profile.adr_enabled = changes["adrEnabled"] = f.adr_enabled  # type: ignore[assignment]
    if f.sub_band is not None or unset_sub_band:
        profile.sub_band = changes["subBand"] = f.sub_band  # type: ignore[assignment]
    _check(profile, sub_band_given=f.sub_band is not None)
    return changes


def _check(p: DeviceProfile, *, sub_band_given: bool) -> None:
    region = REGIONS[p.region]
    if p.reg_params_revision not in MAC_VERSIONS[p.mac_version]:
        allowed = ", ".join(MAC_VERSIONS[p.mac_version])
        raise InvalidInput.field("regParamsRevision", f"for MAC {p.mac_version} must be one of {allowed}")
    if p.device_class not in CLASSES:
        raise InvalidInput.field("deviceClass", "must be A, B or C")
    if not 1 <= p.rx1_delay <= 15:
        raise InvalidInput.field("rx1Delay", "must be 1 to 15 seconds")
    if p.rx2_data_rate not in region.rx2_data_rates:
        lo, hi = region.rx2_data_rates.start, region.rx2_data_rates.stop - 1
        raise InvalidInput.field("rx2DataRate", f"must be DR{lo} to DR{hi} in {region.name}")
    if not region.frequency_ok(p.rx2_frequency):
        hint = "923.3 + 0.6 k MHz (k = 0-7)" if region.name == "US915" else "between 863 and 870 MHz"
        raise InvalidInput.field("rx2Frequency", f"must be {hint} in {region.name}")
    if region.sub_bands:
        if p.sub_band is None:
            raise InvalidInput.field("subBand", f"is required in {region.name} (1 to 8)")
        if not 1 <= p.sub_band <= 8:
            raise InvalidInput.field("subBand", "must be 1 to 8")
    elif p.sub_band is not None or sub_band_given:
        raise InvalidInput.field("subBand", f"{region.name} has no sub-bands: omit it")


def create(session: Session, actor: Actor, *, group_id: int, fields: ProfileFields) -> ProfileView:
    group = owning_group(session, actor, group_id, "device_type:write")
    if fields.name is None:
        raise InvalidInput.field("name", "field required")
    if fields.region is None or fields.region not in REGIONS:
        raise InvalidInput.field("region", f"must be one of {', '.join(REGIONS)}")
    if fields.mac_version is None or fields.mac_version not in MAC_VERSIONS:
        raise InvalidInput.field("macVersion", f"must be one of {', '.join(MAC_VERSIONS)}")
    region = REGIONS[fields.region]
    profile = DeviceProfile(
        group_id=group.id,
        name="",
        region=fields.region,
        mac_version=fields.mac_version,
        reg_params_revision=MAC_VERSIONS[fields.mac_version][0],
        device_class="A",
        rx1_delay=1,
        rx2_data_rate=region.rx2_default_data_rate,
        rx2_frequency=region.rx2_default_frequency,
        adr_enabled=True,
        sub_band=None,
        created_at=utcnow(),
    )
    _apply(profile, fields)
    session.add(profile)
    session.flush()
    audit.record(session, actor, "create", profile, "device_profile", group.path, {"name": profile.name})
    return ProfileView(profile, group)


def _load(session: Session, profile_id: int) -> ProfileView:
    row = session.execute(
        select(DeviceProfile, Group)
        .join(Group, Group.id == DeviceProfile.group_id)
        .where(DeviceProfile.id == profile_id)
    ).first()
    if row is None:
        raise NotFound("device profile not found")
    return ProfileView(row[0], row[1])


def get(session: Session, actor: Actor, profile_id: int, action: str = "device_type:read") -> ProfileView:
    view = _load(session, profile_id)
    actor.require(action, view.group.path, "device profile")
    return view


def update(
    session: Session, actor: Actor, profile_id: int, fields: ProfileFields, *, unset_sub_band: bool = False
) -> ProfileView:
    view = get(session, actor, profile_id, "device_type:write")
    changes = _apply(view.profile, fields, unset_sub_band=unset_sub_band)
    audit.record(session, actor, "update", view.profile, "device_profile", view.group.path, changes)
    return view


def delete(session: Session, actor: Actor, profile_id: int) -> None:
    view = get(session, actor, profile_id, "device_type:write")
    users = list(
        session.scalars(
            select(DeviceType).where(DeviceType.device_profile_id == profile_id).order_by(DeviceType.id).limit(6)
        )
    )
    if users:
        names = ", ".join(f"{dt.name!r} (id {dt.id})" for dt in users[:5])
        more = " and more" if len(users) > 5 else ""
        raise Conflict(f"device profile {profile_id} is in use by device type {names}{more}")
    audit.record(session, actor, "delete", view.profile, "device_profile", view.group.path, {"name": view.profile.name})
    session.delete(view.profile)


def list_profiles(
    session: Session,
    actor: Actor,
    *,
    name: str | None = None,
    group_ids: list[int] | None = None,
    deep: bool = False,
    region: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[ProfileView], bool]:
    conds: list[ColumnElement[bool]] = [actor.visible_filter(Group.path, "device_type:read")]
    if group_ids:
        conds.append(in_groups(session, actor, group_ids, deep, DeviceProfile.group_id))
    if name:
        conds.append(DeviceProfile.name.contains(name, autoescape=True))
    if region:
        conds.append(DeviceProfile.region == region)
    rows = list(
        session.execute(
            select(DeviceProfile, Group)
            .join(Group, Group.id == DeviceProfile.group_id)
            .where(*conds)
            .order_by(DeviceProfile.id)
            .limit(limit + 1)
            .offset(offset)
        )
    )
    return [ProfileView(p, g) for p, g in rows[:limit]], len(rows) > limit


def usable_by(session: Session, profile_id: int, group: Group) -> DeviceProfile | None:
    """A profile a device type in `group` may name: owned by the group or one of its ancestors."""
    view = session.execute(
        select(DeviceProfile, Group)
        .join(Group, Group.id == DeviceProfile.group_id)
        .where(DeviceProfile.id == profile_id)
    ).first()
    if view is None or not group.path.startswith(view[1].path):
        return None
    return view[0]
