"""The live preview server, over real HTTP on 127.0.0.1, with files edited under it."""

from __future__ import annotations

import _thread
import html
import json
import os
import shutil
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from newsletter.config import Config, load_config
from newsletter.content.render import PACKAGE_TEMPLATES
from newsletter.errors import UsageError
from newsletter.web.favicon import favicon_ico
from newsletter.web.preview_server import PreviewServer, serve
from tests.workspace import SAMPLE, make_workspace

POLL = 0.02
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str) -> tuple[int, str]:
    try:
        with _NO_PROXY.open(url, timeout=5) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode("utf-8")


def version(server: PreviewServer) -> int:
    status, body = get(server.url + "version")
    assert status == 200
    return int(json.loads(body)["version"])


def edit(path: Path, text: str) -> None:
    """Save as an editor does (write beside, rename over), then move the mtime clearly
    forward, so a same-second save is still seen and no poll reads half a file."""
    before = path.stat().st_mtime_ns if path.exists() else time.time_ns()
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.utime(tmp, ns=(before + 2_000_000_000, before + 2_000_000_000))
    os.replace(tmp, path)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the preview to change")
        time.sleep(POLL)


def after_edit(server: PreviewServer, old: int) -> int:
    wait_for(lambda: version(server) != old)
    return version(server)


def refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path / "ws")


@pytest.fixture
def config(workspace: Path) -> Config:
    return load_config(workspace / "newsletter.yaml", env={})


@pytest.fixture
def server(workspace: Path, config: Config) -> Iterator[PreviewServer]:
    with PreviewServer(workspace / SAMPLE, config, port=0, poll_interval=POLL) as running:
        yield running


def test_page_shows_both_widths_the_text_part_and_the_reload_script(server: PreviewServer) -> None:
    status, page = get(server.url)
    assert status == 200
    assert page.count("<iframe") == 2
    assert 'src="/email.html?v=1" width="700"' in page
    assert 'src="/email.html?v=1" width="375"' in page
    assert "<h1>North Korea</h1>" in page
    assert "<pre>THE WEEKLY BRIEF\nNorth Korea · 1 August 2025" in page
    assert "Hi Reader," in page  # the sample reader, personalised
    assert 'fetch("/version"' in page and "location.reload()" in page
    assert "<noscript>" in page

    status, part = get(server.url + "email.html")
    assert status == 200 and part.startswith("<!DOCTYPE html>") and "Hi Reader," in part
    status, text = get(server.url + "email.txt")
    assert status == 200 and text.startswith("THE WEEKLY BRIEF\n")
    assert json.loads(get(server.url + "version")[1]) == {
        "version": 1,
        "ok": True,
        "server": server.token,
    }
    assert get(server.url + "nothing")[0] == 404


def test_a_saved_issue_is_served_again_with_a_new_version(server: PreviewServer) -> None:
    issue = server.issue_path
    edit(issue, issue.read_text().replace("title: North Korea", "title: Pyongyang <&> Seoul"))
    v2 = after_edit(server, 1)
    assert v2 == 2 == server.version

    page = get(server.url)[1]
    assert "<h1>Pyongyang &lt;&amp;&gt; Seoul</h1>" in page
    assert "Pyongyang &lt;&amp;&gt; Seoul · 1 August 2025" in page  # the text part, escaped
    assert f'src="/email.html?v={v2}"' in page
    assert "Pyongyang &lt;&amp;&gt; Seoul" in get(server.url + "email.html")[1]

    # saving the same text again changes nothing on the page: no reload
    edit(issue, issue.read_text())
    time.sleep(POLL * 10)
    assert server.version == v2


def test_a_broken_issue_shows_an_error_panel_and_the_server_keeps_going(
    server: PreviewServer,
) -> None:
    issue = server.issue_path
    good = issue.read_text()
    lines = good.splitlines(keepends=True)
    broken = "".join([*lines[:3], "subjet: oops\n", '"<b>bold</b>": 1\n', *lines[3:]])
    edit(issue, broken)
    v2 = after_edit(server, 1)

    status, page = get(server.url)
    assert status == 200
    assert "The issue file has problems" in page
    assert html.escape(f"{issue}:4: subjet: unknown field") in page
    assert html.escape(f"{issue}:5: <b>bold</b>: unknown field") in page
    assert "<b>bold</b>" not in page
    assert "<iframe" not in page
    assert 'fetch("/version"' in page  # the page still reloads itself when fixed
    assert json.loads(get(server.url + "version")[1])["ok"] is False
    status, body = get(server.url + "email.html")
    assert status == 503 and f"{issue}:4: subjet: unknown field" in body

    edit(issue, good)
    after_edit(server, v2)
    page = get(server.url)[1]
    assert "<h1>North Korea</h1>" in page and page.count("<iframe") == 2


def test_a_template_error_and_a_user_template_are_picked_up(
    workspace: Path, config: Config
) -> None:
    templates = workspace / "mytemplates"
    templates.mkdir()
    with PreviewServer(
        workspace / SAMPLE, config, port=0, templates=templates, poll_interval=POLL
    ) as server:
        assert templates / "email.txt" not in server.watched()
        assert PACKAGE_TEMPLATES / "email.txt" in server.watched()

        default = (PACKAGE_TEMPLATES / "email.txt").read_text()
        edit(templates / "email.txt", "Custom text part for {{ issue.title }}\n" + default)
        v = after_edit(server, 1)
        assert get(server.url + "email.txt")[1].startswith("Custom text part for North Korea\n")

        edit(templates / "email.txt", "{{ issue.no_such_thing }}\n")
        v = after_edit(server, v)
        page = get(server.url)[1]
        assert "A template failed" in page and "no_such_thing" in page

        (templates / "email.txt").unlink()
        after_edit(server, v)
        assert get(server.url + "email.txt")[1].startswith("THE WEEKLY BRIEF\n")


def test_config_changes_are_picked_up_and_config_errors_shown(server: PreviewServer) -> None:
    path = server.watched()[1]
    assert path.name == "newsletter.yaml"
    good = path.read_text()

    edit(path, good.replace("name: The Weekly Brief\n", "name: The Friday Brief\n", 1))
    v = after_edit(server, 1)
    assert "THE FRIDAY BRIEF" in get(server.url + "email.txt")[1]

    edit(path, good + "colour: blue\n")
    v = after_edit(server, v)
    page = get(server.url)[1]
    assert "newsletter.yaml has problems" in page
    assert "colour: unknown field" in page

    edit(path, good)
    after_edit(server, v)
    assert get(server.url + "email.txt")[1].startswith("THE WEEKLY BRIEF\n")


def test_favicon_ico_is_answered_not_404(server: PreviewServer) -> None:
    with _NO_PROXY.open(server.url + "favicon.ico", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "image/vnd.microsoft.icon"
        assert response.read() == favicon_ico()


def test_other_host_names_are_refused(server: PreviewServer) -> None:
    request = urllib.request.Request(server.url, headers={"Host": "attacker.example"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        _NO_PROXY.open(request, timeout=5)
    with caught.value as response:
        assert response.code == 421
    assert get(f"http://localhost:{server.port}/version")[0] == 200


def test_close_stops_the_threads_and_frees_the_port(workspace: Path, config: Config) -> None:
    server = PreviewServer(workspace / SAMPLE, config, port=0, poll_interval=POLL).start()
    port = server.port
    idle = socket.create_connection(("127.0.0.1", port))  # a browser's spare connection
    assert get(server.url)[0] == 200
    server.close()
    server.close()  # twice is fine
    idle.close()
    assert refused(port)
    assert not [t for t in threading.enumerate() if t.name.startswith("preview-")]


def test_a_port_in_use_is_a_usage_error(server: PreviewServer, config: Config) -> None:
    with (
        pytest.raises(UsageError, match=f"port {server.port} .* is in use; choose another"),
        PreviewServer(server.issue_path, config, port=server.port),
    ):
        pass


def test_a_missing_issue_file_is_a_usage_error(workspace: Path, config: Config) -> None:
    with (
        pytest.raises(UsageError, match="no such issue file"),
        PreviewServer(workspace / "issues" / "nope.yaml", config, port=0),
    ):
        pass


def test_serve_blocks_until_interrupted_then_stops_cleanly(workspace: Path, config: Config) -> None:
    urls: list[str] = []
    pages: list[tuple[int, str]] = []
    threads: list[threading.Thread] = []

    def browse(url: str) -> None:
        try:
            pages.append(get(url))
        finally:
            _thread.interrupt_main()  # what Ctrl-C does

    def ready(url: str) -> None:
        urls.append(url)
        threads.append(threading.Thread(target=browse, args=(url,)))
        threads[0].start()

    # interrupt_main() raises only where Python handles SIGINT, and pytest started as a
    # shell's background job (as CI and tools start it) inherits SIGINT ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        serve(workspace / SAMPLE, config, port=0, open_browser=False, ready=ready)  # ^C: returns
    finally:
        signal.signal(signal.SIGINT, previous)

    threads[0].join()
    [(status, page)] = pages
    assert status == 200 and "<h1>North Korea</h1>" in page
    assert refused(int(urls[0].rstrip("/").rsplit(":", 1)[1]))


def test_the_sample_workspace_renders_without_a_user_templates_folder(tmp_path: Path) -> None:
    """A copy with `templates:` pointing at a folder that does not exist yet shows why."""
    ws = make_workspace(tmp_path / "ws")
    with (ws / "newsletter.yaml").open("a") as fh:
        fh.write("templates: custom\n")
    config = load_config(ws / "newsletter.yaml", env={})
    with PreviewServer(ws / SAMPLE, config, port=0, poll_interval=POLL) as server:
        page = get(server.url)[1]
        assert "A template failed" in page and "no such templates folder" in page
        shutil.copytree(PACKAGE_TEMPLATES, ws / "custom")
        after_edit(server, 1)
        assert get(server.url)[1].count("<iframe") == 2
