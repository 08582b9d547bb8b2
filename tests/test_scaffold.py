"""`newsletter init` and `newsletter new`: skeletons that work at once and never overwrite."""

from __future__ import annotations

import csv
import datetime as dt
from importlib import resources
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from newsletter import scaffold
from newsletter.cli import app
from newsletter.config import WEEKDAYS, load_config, settings_model
from newsletter.content.issue import load_issue
from newsletter.errors import UsageError, WouldOverwrite
from newsletter.scaffold import next_issue_date, slugify
from tests.workspace import make_workspace

runner = CliRunner()

INIT_FILES = [
    "newsletter.yaml",
    "templates/email.html",
    "templates/email.txt",
    "templates/email.css",
    "subscribers.csv",
    ".gitignore",
]


def files_in(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def the_issue(root: Path) -> Path:
    (issue,) = (root / "issues").glob("*.yaml")
    return issue


def keys(model: type[BaseModel]) -> dict[str, object]:
    """Every setting of a model, by the name written in YAML, nested models as dicts."""
    found: dict[str, object] = {}
    for name, info in model.model_fields.items():
        sub = info.annotation
        nested = isinstance(sub, type) and issubclass(sub, BaseModel)
        found[info.alias or name] = keys(sub) if nested else None  # type: ignore[arg-type]
    return found


def written_keys(data: dict[str, object]) -> dict[str, object]:
    return {k: written_keys(v) if isinstance(v, dict) else None for k, v in data.items()}


# --- newsletter init ------------------------------------------------------------------------


def test_init_creates_a_workspace_and_says_what_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["init", "letter"])
    assert result.exit_code == 0, result.output
    root = tmp_path / "letter"
    issue = the_issue(root)
    made = {*INIT_FILES, f"issues/{issue.name}"}
    assert set(files_in(root)) == made
    for name in made:
        assert f"created letter/{name}" in result.output
    assert "cd letter" in result.output
    assert f"newsletter check issues/{issue.name}" in result.output
    assert f"newsletter send issues/{issue.name} --to subscribers.csv --dry-run" in result.output


def test_init_config_has_every_setting_and_no_secret(tmp_path: Path) -> None:
    workspace = scaffold.init_workspace(tmp_path / "letter")
    text = workspace.config.read_text()
    assert written_keys(yaml.safe_load(text)) == keys(settings_model())
    settings = load_config(workspace.config, env={}).settings
    assert settings.provider == "outbox"
    assert settings.templates == "templates"
    assert settings.schedule.weekday == "friday"
    for variable in ("NEWSLETTER_SECRET", "SENDGRID_API_KEY", "SMTP_PASSWORD"):
        assert f"#   {variable}" in text, f"{variable} is not explained"
    for key in ("secret", "password", "api_key", "apikey"):
        assert key not in written_keys(yaml.safe_load(text)), key
    # every setting is explained: a comment on its line or on one of the two above it
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() and not line.lstrip().startswith("#"):
            above = [x.lstrip() for x in lines[max(0, i - 2) : i]]
            assert "#" in line or any(x.startswith("#") for x in above), line


def test_init_copies_the_packaged_email_templates(tmp_path: Path) -> None:
    workspace = scaffold.init_workspace(tmp_path / "letter")
    packaged = resources.files("newsletter") / "templates"
    for name in ("email.html", "email.txt", "email.css"):
        assert (workspace.root / "templates" / name).read_bytes() == (packaged / name).read_bytes()


def test_init_example_issue_list_and_gitignore(tmp_path: Path) -> None:
    today = dt.date(2025, 8, 5)  # a Tuesday
    workspace = scaffold.init_workspace(tmp_path / "letter", today=today)
    issue = load_issue(workspace.issue)
    assert issue.date == dt.date(2025, 8, 8)  # the Friday after
    assert workspace.issue.name == "2025-08-08-welcome.yaml"
    assert issue.all_articles() and issue.preheader
    with workspace.subscribers.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and rows[0]["email"] == "you@example.com"
    ignored = (workspace.root / ".gitignore").read_text().split()
    assert {"build/", "site/", "outbox/", ".newsletter/"} <= set(ignored)


def test_init_refuses_to_overwrite_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "letter"
    (root / "templates").mkdir(parents=True)
    (root / "subscribers.csv").write_text("email\nmine@example.com\n")
    (root / "templates" / "email.css").write_text("/* mine */")
    before = files_in(root)
    result = runner.invoke(app, ["init", "letter"])
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert "error: letter/subscribers.csv already exists" in out
    assert "error: letter/templates/email.css already exists" in out
    assert "nothing was written" in out
    assert files_in(root) == before
    assert not (root / "issues").exists()


def test_init_refuses_a_file_where_a_folder_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "letter").write_text("a file")
    result = runner.invoke(app, ["init", "letter"])
    assert result.exit_code == 1
    assert "letter is a file, not a folder" in result.output
    assert (tmp_path / "letter").read_text() == "a file"


def test_init_removes_what_it_made_if_a_file_appears_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process creates subscribers.csv after the check: it is kept, and init undoes itself.
    root = tmp_path / "letter"
    monkeypatch.setattr(scaffold, "_refuse_existing", lambda paths, hint: None)
    root.mkdir()
    (root / "subscribers.csv").write_text("theirs")
    with pytest.raises(WouldOverwrite, match=r"subscribers\.csv already exists"):
        scaffold.init_workspace(root)
    assert files_in(root) == {"subscribers.csv": b"theirs"}
    assert sorted(p.name for p in root.iterdir()) == ["subscribers.csv"]


def test_render_check_and_dry_run_work_in_a_new_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NEWSLETTER_SECRET", "NEWSLETTER_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    assert runner.invoke(app, ["init", str(tmp_path / "letter")]).exit_code == 0
    root = tmp_path / "letter"
    monkeypatch.chdir(root)
    issue = f"issues/{the_issue(root).name}"

    result = runner.invoke(app, ["render", issue])
    assert result.exit_code == 0, result.output
    assert (root / "build" / Path(issue).with_suffix(".html").name).is_file()

    result = runner.invoke(app, ["check", issue, "--strict"])
    assert result.exit_code == 0, result.output
    assert "1 checked: 0 errors, 0 warnings" in result.output

    result = runner.invoke(app, ["send", issue, "--to", "subscribers.csv", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "Would send  1 in 1 batches" in result.output
    assert not (root / "outbox").exists()

    result = runner.invoke(app, ["new", "Next week"])
    assert result.exit_code == 0, result.output


# --- newsletter new -------------------------------------------------------------------------


@pytest.mark.parametrize("weekday", WEEKDAYS)
def test_next_issue_date_is_the_next_weekday_on_or_after_today(weekday: str) -> None:
    start = dt.date(2025, 8, 4)  # a Monday
    for offset in range(14):
        today = start + dt.timedelta(days=offset)
        expected = next(
            today + dt.timedelta(days=n)
            for n in range(7)
            if (today + dt.timedelta(days=n)).strftime("%A").lower() == weekday
        )
        assert next_issue_date(weekday, today) == expected  # type: ignore[arg-type]


def test_next_issue_date_on_the_day_itself_is_today() -> None:
    friday = dt.date(2025, 8, 8)
    assert next_issue_date("friday", friday) == friday
    assert next_issue_date("friday", friday + dt.timedelta(days=1)) == dt.date(2025, 8, 15)
    assert next_issue_date("thursday", friday) == dt.date(2025, 8, 14)


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("North Korea", "north-korea"),
        ("Kim's Café & Bar", "kims-cafe-and-bar"),
        ("Straße über Łódź, Ørsted", "strasse-uber-lodz-orsted"),
        ("  --Hello,   World!--  ", "hello-world"),
        ("Ｆｕｌｌ-width ﬁnance", "full-width-finance"),
        ("북한 news 2025", "news-2025"),
        ("北朝鮮", "issue"),
        ("!!!", "issue"),
    ],
)
def test_slug(title: str, slug: str) -> None:
    assert slugify(title) == slug


def test_long_slug_is_cut_at_a_word() -> None:
    slug = slugify("word " * 30)
    assert len(slug) <= 60 and slug.endswith("word") and "--" not in slug
    assert slugify("x" * 80) == "x" * 60


def test_new_creates_a_skeleton_that_check_flags_until_filled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_workspace(tmp_path / "ws")
    monkeypatch.chdir(root)
    title = 'Kim\'s "big" week: part 1 # of 2'
    result = runner.invoke(app, ["new", title, "--date", "2025-08-15"])
    assert result.exit_code == 0, result.output
    name = "issues/2025-08-15-kims-big-week-part-1-of-2.yaml"
    assert result.output.strip() == name
    issue = load_issue(root / name)
    assert issue.title == title
    assert issue.date == dt.date(2025, 8, 15)
    assert len(issue.all_articles()) == 1

    result = runner.invoke(app, ["check", name])
    assert result.exit_code == 1
    for where in (
        "5: subject",
        "6: preheader",
        "7: intro",
        "10: articles[0].headline",
        "11: articles[0].summary",
    ):
        assert f"error: {name}:{where}: leftover placeholder 'TODO'" in result.output, where
    assert "1 checked: 5 errors" in result.output


def test_new_dates_the_issue_on_the_configured_weekday(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = (
        "name: X\nfrom: {email: x@example.org}\npostal_address: 1 Street\n"
        "schedule: {weekday: Tuesday}\n"
    )
    root = make_workspace(tmp_path / "ws", config=config)
    monkeypatch.chdir(root)
    before = dt.date.today()
    result = runner.invoke(app, ["new", "Weekly"])
    assert result.exit_code == 0, result.output
    expected = {next_issue_date("tuesday", d) for d in (before, dt.date.today())}
    (path,) = root.glob("issues/*-weekly.yaml")
    date = dt.date.fromisoformat(path.name[:10])
    assert date in expected
    assert date.weekday() == 1 and 0 <= (date - before).days < 7


def test_new_library_uses_today_and_returns_the_path(tmp_path: Path) -> None:
    root = make_workspace(tmp_path / "ws")
    config = load_config(root / "newsletter.yaml", env={})
    created = scaffold.new_issue(config, "Summer", today=dt.date(2025, 8, 9))  # a Saturday
    assert created.path == root / "issues" / "2025-08-15-summer.yaml"
    assert created.date == dt.date(2025, 8, 15)
    assert created.warnings == []
    other = scaffold.new_issue(config, "Winter", today=dt.date(2025, 8, 9))
    assert other.warnings == ["issues/2025-08-15-summer.yaml is dated 2025-08-15 too"]


def test_new_never_overwrites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_workspace(tmp_path / "ws")
    monkeypatch.chdir(root)
    args = ["new", "Summer", "--date", "2025-08-15"]
    assert runner.invoke(app, args).exit_code == 0
    path = root / "issues" / "2025-08-15-summer.yaml"
    path.write_text("title: Summer, half written\n")
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "issues/2025-08-15-summer.yaml already exists" in result.output
    assert path.read_text() == "title: Summer, half written\n"


def test_new_rejects_a_title_that_is_not_one_line(tmp_path: Path) -> None:
    root = make_workspace(tmp_path / "ws")
    config = load_config(root / "newsletter.yaml", env={})
    for title in ("", "   ", "two\nlines", "next\x85line", "tab\there"):
        with pytest.raises(UsageError):
            scaffold.new_issue(config, title)
    assert list((root / "issues").glob("*-*-*-*.yaml")) == [
        root / "issues" / "2025-08-01-north-korea.yaml"
    ]


def test_new_bad_date_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(make_workspace(tmp_path / "ws"))
    assert runner.invoke(app, ["new", "X", "--date", "2025-13-01"]).exit_code == 2


def test_schedule_weekday_is_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = (
        "name: X\nfrom: {email: x@example.org}\npostal_address: 1 Street\n"
        "schedule:\n  weekday: fri\n"
    )
    monkeypatch.chdir(make_workspace(tmp_path / "ws", config=config))
    result = runner.invoke(app, ["new", "Weekly"])
    assert result.exit_code == 1
    assert "newsletter.yaml:5: schedule.weekday: input should be 'monday'" in " ".join(
        result.output.split()
    )


def test_the_readme_walkthrough_init_then_new_first_issue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's "Start your own", in order: init, check, dry run, send, status, then
    `newsletter new "First issue"`, which works on any day."""
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["init", "news"]).exit_code == 0
    monkeypatch.chdir(tmp_path / "news")
    (welcome,) = [f"issues/{p.name}" for p in Path("issues").iterdir()]
    for step in (
        ["check", welcome],
        ["send", welcome, "--to", "subscribers.csv", "--dry-run"],
        ["send", welcome, "--to", "subscribers.csv", "--yes"],
    ):
        done = runner.invoke(app, step)
        assert done.exit_code == 0, (step, done.output)
    status = runner.invoke(app, ["status", welcome])
    assert status.exit_code == 0 and "Recipients: none" in status.output  # a rehearsal
    assert "Outbox rehearsals (not deliveries: no reader got these): 1 sent" in status.output
    result = runner.invoke(app, ["new", "First issue"])
    assert result.exit_code == 0, result.output
    created = list((tmp_path / "news" / "issues").glob("*-first-issue.yaml"))
    assert len(created) == 1
