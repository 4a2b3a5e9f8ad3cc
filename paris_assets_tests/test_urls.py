"""Untrusted URL lists: only http(s), never a cloud metadata service or a link-local address, decided from the
text of the URL alone. Every test here runs with name lookups and connections forbidden, so a refusal is
proven without sending anything anywhere."""

import socket

import pandas as pd
import pytest

from paris_assets.lib.ingest.download import prepare_source_table
from paris_assets.lib.ingest.urls import UrlPolicy, host_address
from paris_assets.settings import SettingsError, parse_settings


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError(f"network use while checking URLs: {args!r}")

    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "create_connection"):
        monkeypatch.setattr(socket, name, forbidden)
    monkeypatch.setattr(socket.socket, "connect", forbidden)
    monkeypatch.setattr(socket.socket, "connect_ex", forbidden)


@pytest.mark.parametrize("url,reason", [
    ("http://example.com/a.jpg", None),
    ("HTTPS://Example.COM/a.jpg", None),
    ("http://127.0.0.1:8000/a.jpg", None),  # loopback: the demo and the tests serve there
    ("http://[::1]:8000/a.jpg", None),
    ("http://10.1.2.3/a.jpg", None),  # private ranges pass unless listed (see the next test)
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "metadata_address"),
    ("http://169.254.170.2/v2/credentials", "metadata_address"),
    ("http://100.100.100.200/latest/meta-data/", "metadata_address"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "metadata_address"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata_address"),
    ("http://METADATA.google.internal./computeMetadata/v1/", "metadata_address"),
    ("http://2852039166/latest/meta-data/", "metadata_address"),  # 169.254.169.254 as one decimal number
    ("http://0xa9fea9fe/", "metadata_address"),
    ("http://0251.0376.0251.0376/", "metadata_address"),  # octal
    ("http://169.254.43518/", "metadata_address"),  # a.b.c with c 16 bits wide
    ("http://[::ffff:169.254.169.254]/", "metadata_address"),
    ("http://[::ffff:a9fe:a9fe]/", "metadata_address"),
    ("http://[64:ff9b::a9fe:a9fe]/", "metadata_address"),  # NAT64
    ("http://user:pw@169.254.169.254:80/", "metadata_address"),
    # full-width digits and ideographic dots: the resolver reads them as 169.254.169.254 (IDNA nameprep)
    ("http://\uff11\uff16\uff19\uff0e\uff12\uff15\uff14\uff0e\uff11\uff16\uff19\uff0e\uff12\uff15\uff14/latest/meta-data/",
     "metadata_address"),
    ("http://169\u3002254\u3002169\u3002254/", "metadata_address"),
    ("http://METADATA\uff0egoogle\uff0einternal/computeMetadata/v1/", "metadata_address"),
    ("http://b\u00fccher.example/a.jpg", None),  # an ordinary internationalised name passes
    ("http://169.254.1.1/a.jpg", "link_local_address"),
    ("http://[fe80::1]/a.jpg", "link_local_address"),
    ("http://[fe80::1%25eth0]/a.jpg", "link_local_address"),
    ("ftp://example.com/a.jpg", "unsupported_scheme"),
    ("file:///etc/passwd", "unsupported_scheme"),
    ("javascript:alert(1)", "unsupported_scheme"),
    ("example.com/a.jpg", "unsupported_scheme"),
    ("http:///a.jpg", "malformed_url"),
    ("http://[::1/a.jpg", "malformed_url"),
    ("http://example.com:99999999/a.jpg", "malformed_url"),
])
def test_default_policy(url, reason):
    verdict = UrlPolicy().refusal(url)
    assert (verdict and verdict[0]) == reason, verdict


def test_networks_and_hosts_come_from_the_settings():
    settings = parse_settings({"ingest": {"refused_networks": ["10.0.0.0/8", "fc00::/7"],
                                          "refused_hosts": ["Internal.Example"]}})
    policy = UrlPolicy(settings.ingest.refused_networks, settings.ingest.refused_hosts)
    assert policy.refusal("http://10.1.2.3/a.jpg") == ("refused_address", "10.1.2.3 is in 10.0.0.0/8 (ingest.refused_networks)")
    assert policy.refusal("http://167838211/a.jpg")[1].startswith("10.1.2.3 (written 167838211) is in 10.0.0.0/8")
    assert policy.refusal("http://internal.example/a.jpg")[0] == "metadata_address"
    assert policy.refusal("http://169.254.169.254/") is None  # the user's list replaces the default one
    with pytest.raises(SettingsError, match="ingest.refused_networks.*'10.0.0.0/33' is not an address or network"):
        parse_settings({"ingest": {"refused_networks": ["10.0.0.0/33"]}})


@pytest.mark.parametrize("host,address", [
    ("example.com", None), ("1example.com", None), ("0x", None), ("1.2.3.4.5", None),
    ("127.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("::ffff:10.0.0.1", "10.0.0.1"),
])
def test_host_address(host, address):
    assert (str(host_address(host)) if host_address(host) else None) == address


def test_refused_rows_are_counted_by_reason():
    urls = ["http://127.0.0.1:1/a.jpg", "http://169.254.169.254/", "file:///etc/passwd", "http://127.0.0.1:1/a.jpg",
            "http://[fe80::1]/b.jpg", "http://169.254.169.254/"]
    frame = pd.DataFrame({"image_id": [f"id-{u}" for u in urls], "url": urls, "alt_text": "x"})
    todo, refused = prepare_source_table(frame, UrlPolicy())
    assert todo["url"].tolist() == ["http://127.0.0.1:1/a.jpg"]
    assert refused["reason"].tolist() == ["metadata_address", "unsupported_scheme", "duplicate_url",
                                          "link_local_address", "metadata_address"]
    assert refused["detail"].str.len().gt(0).all()
    todo, refused = prepare_source_table(frame)  # no policy (an image folder's own file:// URLs)
    assert refused["reason"].tolist() == ["duplicate_url", "duplicate_url"]
