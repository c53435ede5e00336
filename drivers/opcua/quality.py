"""Pure: OPC UA status codes -> quality and the short reason a reading carries.

A status code is a 32-bit number whose top two bits give its severity
(00 Good, 01 Uncertain, 10 Bad). Good and Uncertain values are delivered
(Uncertain means "usable, but doubtful", e.g. a last usable value); Bad ones
become ``Reading.errors[tag]`` with the code's symbolic name, which is what
server manuals and UaExpert show, so maintenance staff can look it up.
"""

from __future__ import annotations

from typing import Literal

Quality = Literal["good", "uncertain", "bad"]

# The codes a data-acquisition client meets in practice (OPC 10000-4 and -6).
# Anything else is shown by number, which still identifies it unambiguously.
NAMES: dict[int, str] = {
    0x00000000: "Good",
    0x00300000: "GoodClamped",
    0x00960000: "GoodLocalOverride",
    0x40000000: "Uncertain",
    0x408F0000: "UncertainNoCommunicationLastUsableValue",
    0x40900000: "UncertainLastUsableValue",
    0x40920000: "UncertainInitialValue",
    0x40930000: "UncertainSensorNotAccurate",
    0x40940000: "UncertainEngineeringUnitsExceeded",
    0x40950000: "UncertainSubNormal",
    0x40A40000: "UncertainDataSubNormal",
    0x80000000: "Bad",
    0x80020000: "BadInternalError",
    0x80040000: "BadResourceUnavailable",
    0x80050000: "BadCommunicationError",
    0x80060000: "BadEncodingError",
    0x80070000: "BadDecodingError",
    0x800A0000: "BadTimeout",
    0x800C0000: "BadShutdown",
    0x800D0000: "BadServerNotConnected",
    0x800E0000: "BadServerHalted",
    0x80100000: "BadTooManyOperations",
    0x801F0000: "BadUserAccessDenied",
    0x80250000: "BadSessionIdInvalid",
    0x80260000: "BadSessionClosed",
    0x80310000: "BadNoCommunication",
    0x80320000: "BadWaitingForInitialData",
    0x80330000: "BadNodeIdInvalid",
    0x80340000: "BadNodeIdUnknown",
    0x80350000: "BadAttributeIdInvalid",
    0x80360000: "BadIndexRangeInvalid",
    0x80380000: "BadDataEncodingInvalid",
    0x803A0000: "BadNotReadable",
    0x803C0000: "BadOutOfRange",
    0x803D0000: "BadNotSupported",
    0x80440000: "BadMonitoredItemFilterUnsupported",
    0x80450000: "BadFilterNotAllowed",
    0x80600000: "BadBrowseNameInvalid",
    0x806F0000: "BadNoMatch",
    0x80740000: "BadTypeMismatch",
    0x80860000: "BadSecureChannelClosed",
    0x80890000: "BadConfigurationError",
    0x808A0000: "BadNotConnected",
    0x808B0000: "BadDeviceFailure",
    0x808C0000: "BadSensorFailure",
    0x808D0000: "BadOutOfService",
    0x808E0000: "BadDeadbandFilterInvalid",
    0x809B0000: "BadNoData",
    0x809E0000: "BadDataUnavailable",
    0x80AE0000: "BadConnectionClosed",
}

# The low 16 bits carry flags (overflow, limit bits, info type): they do not
# change what the code means, so names are looked up on the high 16 bits.
_CODE_MASK = 0xFFFF0000


def quality(code: int) -> Quality:
    """Severity of a status code."""
    severity = (code >> 30) & 0b11
    if severity == 0:
        return "good"
    if severity == 1:
        return "uncertain"
    return "bad"


def name(code: int) -> str:
    """Symbolic name (``BadNodeIdUnknown``), or ``Bad 0x80AB0000`` for codes not in the table."""
    known = NAMES.get(code & _CODE_MASK)
    if known is not None:
        return known
    return f"{quality(code).capitalize()} 0x{code & 0xFFFFFFFF:08X}"


def error_for(code: int) -> str | None:
    """The reading error for a status code: ``None`` when the value is usable."""
    if quality(code) == "bad":
        return name(code)
    return None
