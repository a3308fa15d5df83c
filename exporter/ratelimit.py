"""Per-client-IP token buckets for ingest; IPs live in memory only, as salted hashes, never stored or logged."""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """Parse the comma-separated --trusted-proxies value into networks."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def client_ip(remote_addr: str, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """Return the client address: X-Forwarded-For is believed only through trusted proxies, right to left."""
    hops = [remote_addr] + ([h.strip() for h in forwarded_for.split(",")][::-1] if forwarded_for else [])
    for index, hop in enumerate(hops):
        if index + 1 == len(hops) or not _trusted(hop, trusted):
            return hop
    return remote_addr


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    """Return whether an address is one of the trusted proxies."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


class RateLimiter:
    """Token buckets keyed by a per-process salted hash of the IP, with a bounded number of clients."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic, max_clients: int = 100_000
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: OrderedDict[int, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, ip: str) -> float:
        """Take a token for ip; return 0 when allowed, else the seconds to wait for the next token."""
        key = hash(ip)  # str hashes are salted per process: the bucket table holds no IP
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)  # forget the least recently seen client
        return wait

    @staticmethod
    def retry_after(wait: float) -> int:
        """Round a wait up to whole seconds for the Retry-After header."""
        return max(1, math.ceil(wait))
