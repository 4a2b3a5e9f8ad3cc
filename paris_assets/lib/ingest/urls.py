"""Which URLs of an untrusted list may be fetched: http(s) only, and never a cloud metadata service or a
link-local address (the crawler's own credentials live there).

Checked from the URL's text alone: nothing is resolved or connected to. A host written as a number in any
form the system resolver accepts (2852039166, 0xa9fea9fe, 0251.0376.0251.0376, ::ffff:169.254.169.254) is
read as the address it reaches. A host *name* is refused only when it is a known metadata name: a name that
resolves to a refused address, a DNS answer that changes after this check (rebinding), or a redirect to such
an address are not caught here; the network the crawler runs in must block those (see the README).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

SCHEMES = ("http", "https")
# Cloud metadata endpoints: AWS, GCP, Azure, Oracle (169.254.169.254), AWS ECS tasks (169.254.170.2),
# AWS IMDS over IPv6 (fd00:ec2::254), Alibaba (100.100.100.200).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200"))
METADATA_HOSTS = ("metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                  "instance-data.ec2.internal")
REFUSED_NETWORKS = ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NUMERIC_V4 = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}")


@dataclass(frozen=True)
class UrlPolicy:
    """Refuse URLs whose scheme is not http(s), whose host is a listed name, or whose address lies in a listed
    network. Loopback and private ranges pass unless listed."""
    refused_networks: tuple[str, ...] = REFUSED_NETWORKS
    refused_hosts: tuple[str, ...] = METADATA_HOSTS

    def refusal(self, url: str) -> tuple[str, str] | None:
        """None for a URL that may be fetched, else (reason, detail)."""
        try:
            parts = urlsplit(url.strip())
            parts.port  # raises on a port that is not a number
        except ValueError as exc:
            return "malformed_url", f"cannot parse the URL: {exc}"
        if parts.scheme.lower() not in SCHEMES:
            return "unsupported_scheme", f"scheme {parts.scheme or '(none)'!r}: only http and https are fetched"
        if not parts.hostname:
            return "malformed_url", "no host"
        try:  # as the resolver sees it: full-width digits and ideographic dots become ASCII (IDNA nameprep)
            host = parts.hostname.encode("idna").decode("ascii").lower()
        except UnicodeError as exc:
            return "malformed_url", f"host {parts.hostname!r} is not a valid internationalised name: {exc}"
        return self._host_refusal(host.rstrip("."))

    @functools.lru_cache(maxsize=65536)
    def _host_refusal(self, host: str) -> tuple[str, str] | None:
        if host in self._hosts:
            return "metadata_address", f"{host} is a cloud metadata host (ingest.refused_hosts)"
        address = host_address(host)
        if address is None:
            return None
        written = "" if str(address) == host else f" (written {host})"
        for network in self._networks:
            if address in network:
                reason = ("metadata_address" if address in METADATA_ADDRESSES
                          else "link_local_address" if address.is_link_local else "refused_address")
                return reason, f"{address}{written} is in {network} (ingest.refused_networks)"
        return None

    @functools.cached_property
    def _hosts(self) -> frozenset[str]:
        return frozenset(h.lower().rstrip(".") for h in self.refused_hosts)

    @functools.cached_property
    def _networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.refused_networks)


def host_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a URL's host reaches when it is written as one, else None (a name). IPv4 in the legacy
    forms inet_aton reads (decimal, octal, hex, fewer than four parts), which the resolver also accepts;
    IPv4-mapped and NAT64 IPv6 addresses as the IPv4 address they carry."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # a zone id (fe80::1%eth0) names an interface
    except ValueError:
        if not _NUMERIC_V4.fullmatch(host.lower()):
            return None
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))  # parses only: no lookup
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def check_networks(networks: tuple[str, ...]) -> tuple[str, ...]:
    """Settings validation: every entry must be an address or a CIDR network."""
    for entry in networks:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not an address or network (e.g. 10.0.0.0/8): {exc}") from None
    return networks
