"""The test suite on every Python that pyproject.toml claims: `nox` (or `nox -s tests-3.12`).

`make test` and .ci/run stay on one version to keep CI fast; this is the matrix to run before
a release or after touching anything version-sensitive (threads, asyncio, the stdlib's email
or http code). Each session installs the package with its test extras into its own venv.
"""

from __future__ import annotations

import nox

#: Keep in step with `requires-python` and the classifiers in pyproject.toml.
PYTHONS = ["3.11", "3.12", "3.13"]

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session(python=PYTHONS, venv_backend="venv")
def tests(session: nox.Session) -> None:
    """pytest, with any arguments after `--` passed on (`nox -- -k retry_after`)."""
    session.install("-q", "-e", ".[test]")
    session.run("pytest", "-q", "-p", "no:cacheprovider", *session.posargs)
