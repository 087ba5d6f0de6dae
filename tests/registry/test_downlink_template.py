"""The DIRECT downlink template renderer: widths, encodings and refusals."""

from __future__ import annotations

import pytest

from heron.downlink.templates import TemplateError, check, render, width


def test_literal_hex_renders_to_its_bytes_in_either_case() -> None:
    assert render("0123456789abcdef", {}) == bytes.fromhex("0123456789ABCDEF")


def test_time_is_four_bytes_of_epoch_seconds_big_endian() -> None:
    assert render("{time}00000000", {"time": 0x5F5E1000}) == bytes.fromhex("5F5E100000000000")


def test_tap_id_is_four_bytes_of_the_station_id() -> None:
    assert render("{tapId}{time}", {"tapId": 0x1A2B, "time": 1}) == bytes.fromhex("00001A2B00000001")


def test_rssi_is_two_signed_bytes_rounded_from_dbm() -> None:
    assert render("{rssi}000000000000", {"rssi": -120.4}) == bytes.fromhex("FF88000000000000")
    assert render("AA{rssi}0000000000", {"rssi": 5}) == bytes.fromhex("AA00050000000000")


def test_widths_add_up_per_variable() -> None:
    assert width("{time}") == 4
    assert width("{tapId}{rssi}") == 6
    assert width("01{rssi}AABBCCDD00") == 8


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("00", "renders to 1"),
        ("{time}{tapId}00", "renders to 9"),
        ("{time}{rssi}", "renders to 6"),
        ("", "renders to 0"),
    ],
)
def test_template_not_exactly_eight_bytes_is_refused(template: str, reason: str) -> None:
    with pytest.raises(TemplateError, match=reason):
        check(template)


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{temp}00000000", "unknown variable {temp}"),
        ("0{time}0000000", "whole bytes"),
        ("00 11 22 33 44 55 66 77", "unexpected character"),
        ("{time", "unexpected character"),
        ("zz00000000000000", "unexpected character"),
    ],
)
def test_malformed_template_is_refused_saying_why(template: str, reason: str) -> None:
    with pytest.raises(TemplateError, match=reason):
        check(template)


def test_value_that_does_not_fit_its_variable_is_refused() -> None:
    with pytest.raises(TemplateError, match="does not fit"):
        render("{rssi}000000000000", {"rssi": 40000})
    with pytest.raises(TemplateError, match="does not fit"):
        render("{time}00000000", {"time": -1})
    with pytest.raises(TemplateError, match="no value for"):
        render("{tapId}00000000", {})
