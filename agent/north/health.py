"""What the ends of recent broker connections say: backoff, log budget, the likely cause.

A connection the broker accepts and then closes at once (a packet above its
size limit, an ACL kick, a second box with the same client id) must not be
retried at full speed: the backoff is reset only once a connection stayed
up :data:`STABLE_S` (a PUBACK is no proof: a takeover or a size limit can
close the connection after some batches went through), and such a storm
logs one warning, then one summary at most every :data:`SUMMARY_S`; the
counts go to the publisher's stats.

With MQTT 3.1.1 a broker gives no reason when it closes a connection, so the
causes named here are inferences from a pattern, and say "probably":

* the same oldest unacknowledged batch at the end of two connections in a row,
  larger than anything acknowledged so far: the broker refuses its size. The
  publisher's message limit drops to half of it, so the batch is cut
  (counted) instead of being retried blindly.
* connections ending soon after being accepted, again and again: another
  client with the same id (each connect closes the other), or a refusal.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from agent.north.options import MIN_MESSAGE_SIZE, MqttOptions, PublisherStats

log = logging.getLogger("agent.north.link")

STABLE_S = 10.0  # a connection up this long resets the backoff
QUICK_S = 0.5  # closed this soon after CONNACK: before anyone else could have connected
SUMMARY_S = 60.0  # at most one summary line of a storm per this many seconds
STRIKES = 2  # the same batch at the head of this many dropped connections in a row


@dataclass(frozen=True, slots=True)
class LinkEnd:
    """How one accepted connection ended."""

    reason: str
    lasted: float  # seconds from CONNACK to the end
    by_us: bool  # our own dead-link abort, not the broker or the network
    head: tuple[int, int] | None  # (seq, packet bytes) of the oldest unacknowledged batch


class LinkHealth:
    """Backoff attempt, storm counts, the learned message limit; one per publisher."""

    def __init__(self, options: MqttOptions, stats: PublisherStats) -> None:
        self._o = options
        self._stats = stats
        self.attempt = 0
        self.limit = options.max_message_size  # lowered when the broker shows a smaller one
        self.largest_acked = 0  # the largest packet the broker acknowledged so far
        self._streak = 0  # accepted connections that ended early, in a row
        self._suspect: tuple[int, int] | None = None
        self._strikes = 0
        self.warned = False
        self._named = False  # the probable cause of this storm was logged
        self._repeats = 0
        self._summary_at = 0.0

    def stable(self) -> bool:
        """A connection stayed up STABLE_S: reset the backoff; True if a warning is lifted."""
        self.attempt = 0
        self._streak = 0
        self._named = False
        lifted, self.warned = self.warned, False
        self._repeats = 0
        return lifted

    def ended(self, end: LinkEnd) -> str:
        """The sentence for ``last_error`` after an accepted connection ended."""
        if end.by_us:
            self._suspect, self._strikes = None, 0
            return end.reason
        early = end.lasted < STABLE_S
        if early:
            self._streak += 1
            self._stats.early_disconnects += 1
        too_large = self._too_large(end.head)
        if too_large is not None:
            log.warning("MQTT broker %s:%d: %s", self._o.host, self._o.port, too_large)
            return too_large
        if not early or self._streak < STRIKES:
            return end.reason
        cause = self._storm_cause(end)
        if not self._named:  # once per storm: the first warning could only say "lost"
            log.warning("MQTT broker %s:%d: %s", self._o.host, self._o.port, cause)
            self._named = True
        return cause

    def _storm_cause(self, end: LinkEnd) -> str:
        after = f"{end.lasted:.1f} s" if end.lasted >= 0.1 else "at once"
        if end.lasted < QUICK_S:
            return (
                f"the broker closed the connection {after} after accepting it, "
                f"{self._streak} times in a row ({end.reason}): it probably refuses something "
                f"this agent sends (an ACL on mqtt.topic or mqtt.status_topic?), or another "
                f"client connects with the client id {self._o.client_id!r}"
            )
        return (
            f"the broker closed the connection {after} after accepting it, {self._streak} "
            f"times in a row ({end.reason}): probably another client with the client id "
            f"{self._o.client_id!r} connected (a broker closes one connection when another "
            f"uses the same id); give each box its own mqtt.client_id"
        )

    def _too_large(self, head: tuple[int, int] | None) -> str | None:
        if head is None or head != self._suspect:
            self._suspect, self._strikes = head, 1
            return None
        self._strikes += 1
        seq, size = head
        if self._strikes < STRIKES or size <= max(self.largest_acked, MIN_MESSAGE_SIZE):
            return None  # a size it took before is no size problem
        # half: its real limit is unknown, and cutting a second time costs another storm
        self.limit = max(MIN_MESSAGE_SIZE, min(self.limit, size // 2))
        self._suspect, self._strikes = None, 0
        return (
            f"the broker closes the connection after a {size:,}-byte message (seq {seq}, "
            f"twice in a row): set mqtt.max_message_size below it; meanwhile batches above "
            f"{self.limit:,} bytes are cut"
        )

    def log_down(self, reason: str) -> None:
        """One warning per outage or storm, then a summary at most every SUMMARY_S."""
        o = self._o
        now = time.monotonic()
        if not self.warned:
            log.warning(
                "MQTT broker %s:%d unavailable, batches stay buffered: %s", o.host, o.port, reason
            )
            self.warned, self._repeats, self._summary_at = True, 0, now
            return
        self._repeats += 1
        if now - self._summary_at < SUMMARY_S:
            log.debug("MQTT broker %s:%d still unavailable: %s", o.host, o.port, reason)
            return
        log.warning(
            "MQTT broker %s:%d still unavailable: %d more failed or dropped connections in "
            "the last %.0f s; last: %s",
            o.host, o.port, self._repeats, now - self._summary_at, reason,
        )  # fmt: skip
        self._repeats, self._summary_at = 0, now
