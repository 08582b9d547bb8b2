"""Fetching for `newsletter add`, against a real HTTP server on 127.0.0.1 (servers/pages.py)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from newsletter.content.collect.add import AddOptions, _fetch_all
from newsletter.content.collect.fetch import (
    PAGE_BYTES,
    USER_AGENT,
    WORKERS,
    check_address,
    fetch,
    new_client,
)
from newsletter.errors import FetchError
from tests.servers.pages import PageServer


@pytest.fixture
def pages() -> Iterator[PageServer]:
    with PageServer(slow_seconds=3.0) as server:
        yield server


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:9/x", "127.0.0.1 is a private, loopback or link-local address"),
        ("http://localhost/x", "localhost is a private, loopback or link-local address"),
        ("http://[::1]/x", "::1 is a private, loopback or link-local address"),
        ("http://10.1.2.3/x", "(10.1.2.3)"),
        ("http://192.168.0.1/x", "(192.168.0.1)"),
        ("http://169.254.169.254/latest/meta-data/", "(169.254.169.254)"),  # cloud metadata
        ("http://[::ffff:127.0.0.1]/x", "(127.0.0.1)"),  # IPv4-mapped IPv6
        ("http://0.0.0.0/x", "(0.0.0.0)"),
        ("file:///etc/passwd", "file links are not fetched"),
        ("ftp://ftp.example.org/x", "ftp links are not fetched"),
        ("/relative/path", "a relative links are not fetched"),
        ("http://host.invalid/x", "host not found: host.invalid"),
    ],
)
def test_private_addresses_and_other_schemes_are_refused(url: str, reason: str) -> None:
    with pytest.raises(FetchError) as caught:
        check_address(url)
    assert reason in str(caught.value)


def test_a_refused_address_is_never_contacted(pages: PageServer) -> None:
    with new_client(2.0) as client, pytest.raises(FetchError, match="--allow-local"):
        fetch(client, pages.url("/news/og-only"))
    assert pages.requests == []


def test_a_page_is_fetched_with_our_user_agent(pages: PageServer) -> None:
    with new_client(2.0) as client:
        got = fetch(client, pages.url("/news/og-only"), allow_local=True)
    assert got.content_type == "text/html"
    assert "North Koreans in Russia" in got.text
    assert pages.requests == [("/news/og-only", USER_AGENT)]
    assert USER_AGENT.startswith("newsletter/")


def test_redirects_are_followed_and_each_hop_reported(pages: PageServer) -> None:
    with new_client(2.0) as client:
        got = fetch(client, pages.url("/short/defector"), allow_local=True)
    assert [(h.status, h.url) for h in got.redirects] == [
        (301, pages.url("/r/2")),
        (302, pages.url("/news/moved?utm_source=newsletter&utm_campaign=week&ref=home")),
    ]
    assert got.final_url == got.redirects[-1].url


def test_each_redirect_is_checked_again(pages: PageServer) -> None:
    with new_client(2.0) as client, pytest.raises(FetchError, match="file links are not fetched"):
        fetch(client, pages.url("/go/file"), allow_local=True)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/missing", "404 Not Found"),
        ("/loop", "more than 5 redirects (a redirect loop?)"),
    ],
)
def test_failures_are_one_line_reasons(pages: PageServer, path: str, reason: str) -> None:
    with new_client(2.0) as client, pytest.raises(FetchError) as caught:
        fetch(client, pages.url(path), allow_local=True)
    assert str(caught.value) == reason


def test_a_slow_page_times_out(pages: PageServer) -> None:
    started = time.monotonic()
    with new_client(0.5) as client, pytest.raises(FetchError, match=r"no answer within 0.5 s"):
        fetch(client, pages.url("/slow"), allow_local=True, timeout=0.5)
    assert time.monotonic() - started < 2.5


def test_an_endless_page_is_cut_at_the_size_cap(pages: PageServer) -> None:
    started = time.monotonic()
    with new_client(5.0) as client:
        got = fetch(client, pages.url("/huge"), allow_local=True, timeout=5.0)
    assert got.truncated
    assert len(got.body) == PAGE_BYTES
    assert "The Longest Page on the Web" in got.text
    assert time.monotonic() - started < 5.0


def test_a_latin1_page_is_decoded_by_its_meta_charset(pages: PageServer) -> None:
    with new_client(2.0) as client:
        got = fetch(client, pages.url("/news/latin1"), allow_local=True)
    assert "Café owners in Pyongyang « reopen »" in got.text
    assert "capital’s" in got.text


def test_at_most_a_few_pages_are_fetched_at_once(pages: PageServer) -> None:
    urls = [pages.url(f"/wait/{n}") for n in range(10)]
    with new_client(5.0) as client:
        got = _fetch_all(client, urls, AddOptions(allow_local=True, timeout=5.0))
    assert all(not isinstance(g, FetchError) for g in got)
    assert 1 < pages.max_in_flight <= WORKERS


def test_the_address_checked_is_the_one_connected_to(
    pages: PageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: a second lookup would answer another address; there is none."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def resolver(host: str, port: object, *args: object, **kwargs: object) -> object:
        if host == "rebind.test":
            lookups.append(host)
            host = "127.0.0.1" if len(lookups) == 1 else "10.255.255.1"
        return real(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    port = pages.base.rsplit(":", 1)[1]
    with new_client(2.0) as client:
        got = fetch(client, f"http://rebind.test:{port}/news/og-only", allow_local=True)
    assert "North Koreans" in got.text
    assert lookups == ["rebind.test"]
    assert pages.hosts == [f"rebind.test:{port}"]  # the site still sees its own name
