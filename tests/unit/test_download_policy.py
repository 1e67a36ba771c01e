"""Destinations and URLs: what the downloader may reach and how offers are read."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from muscipula.capture.download.errors import FetchError
from muscipula.capture.download.policy import Policy
from muscipula.capture.download.target import ANONYMOUS, parse

SCHEMES = ["http", "https", "ftp", "tftp"]


@pytest.mark.parametrize("ip,why", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"),
    ("172.16.0.9", "private"), ("192.168.1.1", "private"), ("fd00::1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("240.0.0.1", "reserved"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("100.64.0.1", "not global"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"),
    ("2002:c0a8:0101::1", "private"), ("192.0.0.8", "not global"),
    ("192.88.99.1", "not global"), ("fec0::1", "not global"),
    ("::ffff:192.175.48.6", "not global"),
])
def test_each_address_class_is_refused(ip: str, why: str) -> None:
    assert Policy([]).refusal(ipaddress.ip_address(ip)) == why
    with pytest.raises(FetchError) as err:
        Policy([]).check([ip])
    assert err.value.reason == "destination" and why in err.value.detail


@pytest.mark.parametrize("ip", ["8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8"])
def test_public_addresses_pass(ip: str) -> None:
    assert Policy([]).check([ip]) == [ip]


def test_allow_networks_admits_only_what_they_list() -> None:
    policy = Policy(["127.0.0.0/8", "fd00::/8"])
    assert policy.check(["127.0.0.1", "fd00::5"]) == ["127.0.0.1", "fd00::5"]
    # an IPv4-mapped address is judged as its IPv4
    assert policy.check(["::ffff:127.0.0.2"]) == ["::ffff:127.0.0.2"]
    with pytest.raises(FetchError):
        policy.check(["10.0.0.1"])
    with pytest.raises(FetchError):
        Policy(["10.0.0.0/8"]).check(["::ffff:127.0.0.1"])


def test_a_name_resolving_to_a_mix_is_refused() -> None:
    with pytest.raises(FetchError) as err:
        Policy([]).check(["8.8.8.8", "192.168.0.10"])
    assert err.value.reason == "destination" and "192.168.0.10" in err.value.detail


def test_resolve_checks_what_the_resolver_gives() -> None:
    async def go(policy: Policy) -> list[str]:
        return await policy.resolve("localhost", 80, socket.SOCK_STREAM, 5.0)

    with pytest.raises(FetchError) as err:
        asyncio.run(go(Policy([])))
    assert err.value.reason == "destination"
    assert "127.0.0.1" in asyncio.run(go(Policy(["127.0.0.0/8", "::1/128"])))
    # numeric forms a resolver expands are checked after expansion
    with pytest.raises(FetchError):
        asyncio.run(Policy([]).resolve("2130706433", 80, socket.SOCK_STREAM, 5.0))


def test_resolution_failure_is_dns() -> None:
    with pytest.raises(FetchError) as err:
        asyncio.run(Policy([]).resolve("no-such-host.invalid", 80, socket.SOCK_STREAM, 5.0))
    assert err.value.reason == "dns"


def test_urls_are_parsed() -> None:
    t = parse("http://Example.COM/a/b?c=d", SCHEMES)
    assert (t.scheme, t.host, t.port, t.path) == ("http", "example.com", 80,
                                                  "http://Example.COM/a/b?c=d")
    assert parse("https://[2001:db8::1]:8443/x", SCHEMES).port == 8443
    f = parse("ftp://bob:s%40cret@1.2.3.4:2121/dir/bot%20x;type=i", SCHEMES)
    assert (f.user, f.password, f.port, f.path) == ("bob", "s@cret", 2121, "dir/bot x")
    a = parse("ftp://1.2.3.4/bot", SCHEMES)
    assert (a.user, a.password, a.port) == (*ANONYMOUS, 21)
    t2 = parse("tftp://1.2.3.4/boot/x.bin", SCHEMES)
    assert (t2.port, t2.path) == (69, "boot/x.bin")


@pytest.mark.parametrize("url,reason", [
    ("smb://1.2.3.4/x", "scheme"), ("gopher://1.2.3.4/", "scheme"), ("http:///x", "url"),
    ("http://1.2.3.4:99999/", "url"), ("http://1.2.3.4:0/", "url"),
    ("ftp://1.2.3.4/", "url"), ("ftp://1.2.3.4/a%0d%0aDELE%20x", "url"),
    ("tftp://1.2.3.4/a%00b", "url"), ("ftp://us%0aer@1.2.3.4/a", "url"),
])
def test_bad_urls_are_refused_before_any_lookup(url: str, reason: str) -> None:
    with pytest.raises(FetchError) as err:
        parse(url, SCHEMES)
    assert err.value.reason == reason


def test_schemes_are_configurable() -> None:
    with pytest.raises(FetchError) as err:
        parse("ftp://1.2.3.4/x", ["http"])
    assert err.value.reason == "scheme"


def test_a_stuck_lookup_times_out_in_its_own_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from muscipula.capture.download import policy as policy_module

    stuck = threading.Event()
    real = policy_module.socket.getaddrinfo

    def slow(host: str, *args: object, **kw: object) -> object:
        if host == "slow.example":
            stuck.wait(5)
        return real(host, *args, **kw)

    monkeypatch.setattr(policy_module.socket, "getaddrinfo", slow)
    p = Policy(["127.0.0.0/8"], resolvers=1)

    async def go() -> None:
        with pytest.raises(FetchError) as err:
            await p.resolve("slow.example", 80, socket.SOCK_STREAM, 0.2)
        assert err.value.reason == "dns" and err.value.detail == "timeout"
        # the loop's default pool is not the one held by the stuck lookup
        assert await asyncio.get_running_loop().run_in_executor(None, lambda: 7) == 7

    try:
        asyncio.run(go())
    finally:
        stuck.set()
        p.close()


def test_a_stager_url_must_name_its_port_and_be_allowed() -> None:
    assert parse("tcp://192.0.2.5:4444/", ["tcp"]).port == 4444
    with pytest.raises(FetchError) as err:
        parse("tcp://192.0.2.5/", ["tcp"])
    assert err.value.reason == "url"
    with pytest.raises(FetchError) as err:
        parse("tcp://192.0.2.5:4444/", ["http"])
    assert err.value.reason == "scheme"
