"""Cut a batch into messages that fit the broker's limit, before any seq is assigned.

A broker closes the connection on a packet above its maximum size, so a batch
that is too large would block the queue forever. Splitting happens before the
batch reaches the writer: each piece is a batch of its own and gets its own
seq at commit, so two messages never share a seq. A single reading that cannot
fit alone is refused (the caller counts and logs it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent.message import encode_event_parts, encode_parts
from drivers.base import Reading

SEQ_DIGITS = 20  # room left for the seq spliced in at commit (a 64-bit integer)

Parts = tuple[bytes, bytes, int]  # head, tail, n_values


def encoded_size(parts: tuple[bytes, bytes]) -> int:
    """The message's size in bytes once the longest seq is spliced in."""
    return len(parts[0]) + len(parts[1]) + SEQ_DIGITS


def split_batch(
    agent: str, device: str, readings: Sequence[Reading], limit: int | None
) -> tuple[list[Parts], list[Reading]]:
    """Encoded pieces of ``readings`` each at most ``limit`` bytes, and the readings refused.

    Raise ``ValueError`` when a reading cannot be encoded (as :func:`encode_parts`).
    """
    whole = encode_parts(agent, device, readings)
    if limit is None or encoded_size(whole) <= limit:
        return [(*whole, _values(readings))], []
    empty = encoded_size(encode_parts(agent, device, []))  # the body is "[]"
    pieces: list[Parts] = []
    refused: list[Reading] = []
    current: list[Reading] = []
    size = empty
    for reading in readings:
        # one reading adds its JSON and a comma: sizes add up, no re-encoding per trial
        alone = encoded_size(encode_parts(agent, device, [reading]))
        if alone > limit:
            refused.append(reading)
            continue
        grown = alone if not current else size + (alone - empty) + 1
        if current and grown > limit:
            pieces.append((*encode_parts(agent, device, current), _values(current)))
            current, grown = [], alone
        current.append(reading)
        size = grown
    if current:
        pieces.append((*encode_parts(agent, device, current), _values(current)))
    return pieces, refused


def _values(readings: Sequence[Reading]) -> int:
    return sum(len(r.values) for r in readings)


EventParts = tuple[bytes, bytes, int]  # head, tail, n_events


def split_events(
    agent: str, source: str, events: Sequence[Mapping[str, Any]], limit: int | None
) -> tuple[list[EventParts], int]:
    """Encoded pieces of an events message each at most ``limit`` bytes, and how many
    events were refused (too large alone). Raise ``ValueError`` as
    :func:`~agent.message.encode_event_parts`."""
    whole = encode_event_parts(agent, source, events)
    if limit is None or encoded_size(whole) <= limit:
        return [(*whole, len(events))], 0
    pieces: list[EventParts] = []
    refused = 0
    current: list[Mapping[str, Any]] = []
    for event in events:
        trial = encode_event_parts(agent, source, [*current, event])
        if encoded_size(trial) <= limit:
            current.append(event)
            continue
        if current:
            pieces.append((*encode_event_parts(agent, source, current), len(current)))
            current = []
        if encoded_size(encode_event_parts(agent, source, [event])) > limit:
            refused += 1
        else:
            current = [event]
    if current:
        pieces.append((*encode_event_parts(agent, source, current), len(current)))
    return pieces, refused
