"""SSRF guard, hermetic: the resolver is injected."""

from __future__ import annotations

import pytest

from costwise.webhooks import CallbackRefused, Guard, system_resolver

ZONE = {
    "loop.example": ["127.0.0.1"],
    "ten.example": ["10.9.8.7"],
    "meta.example": ["169.254.169.254"],
    "mixed.example": ["93.184.216.34", "192.168.1.20"],  # one bad answer is enough to refuse
    "v6loop.example": ["::1"],
    "public.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
}


async def resolve(host: str, port: int) -> list[str]:
    return ZONE[host]


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1/hook", "loopback"),
        ("http://127.9.9.9:8080/", "loopback"),
        ("http://10.0.0.1/", "private"),
        ("http://172.16.4.4/", "private"),
        ("http://192.168.0.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[fd00:ec2::254]/", "cloud metadata"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fc00::1]/", "private"),
        ("http://100.64.0.1/", "not globally routable"),
        ("http://localhost/", "local name"),
        ("http://LOCALHOST./", "local name"),
        ("http://api.localhost/", "local name"),
        ("http://loop.example/", "resolves to 127.0.0.1"),
        ("http://ten.example/", "resolves to 10.9.8.7"),
        ("https://meta.example/", "resolves to 169.254.169.254"),
        ("https://mixed.example/", "resolves to 192.168.1.20"),
        ("http://v6loop.example/", "resolves to ::1"),
        ("ftp://public.example/", "http(s)"),
        ("gopher://127.0.0.1:70/", "http(s)"),
        ("http:///nohost", "http(s) with a host"),
    ],
)
async def test_refused(url: str, why: str) -> None:
    with pytest.raises(CallbackRefused) as refused:
        await Guard([], resolve).target(url)
    assert why in str(refused.value)


async def test_a_public_name_is_pinned_to_its_checked_address() -> None:
    target = await Guard([], resolve).target("https://public.example:8443/hooks?token=t")
    assert target.url == "https://93.184.216.34:8443/hooks?token=t"
    assert (target.host, target.sni) == ("public.example:8443", "public.example")


async def test_the_allow_list_takes_cidrs_and_host_port_pairs() -> None:
    guard = Guard(["10.9.0.0/16", "127.0.0.1:9000", "localhost:9001", "[::1]:9002"], resolve)
    assert (await guard.target("http://ten.example/x")).url == "http://10.9.8.7/x"
    assert (await guard.target("http://127.0.0.1:9000/x")).url == "http://127.0.0.1:9000/x"
    assert (await guard.target("http://[::1]:9002/x")).url == "http://[::1]:9002/x"
    with pytest.raises(CallbackRefused):
        await guard.target("http://127.0.0.1:9001/x")  # the pair names a port, not the whole host
    with pytest.raises(CallbackRefused):
        await guard.target("http://10.10.0.1/x")


def test_a_bad_allow_entry_fails_at_start() -> None:
    with pytest.raises(ValueError, match="neither a CIDR"):
        Guard(["example.com"], resolve)


@pytest.mark.parametrize("url", ["http://2130706433/", "http://0x7f000001/", "http://127.1/", "http://017700000001/"])
async def test_numeric_spellings_of_loopback_are_caught_after_resolution(url: str) -> None:
    # The system resolver parses these locally (no DNS): whatever they spell, the checked address is loopback.
    with pytest.raises(CallbackRefused, match="loopback"):
        await Guard([], system_resolver).target(url)
