"""Logs carry journald priorities when stderr is the journal ($JOURNAL_STREAM), else plain."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SNIPPET = """
import logging
from genofed.cli.logs import setup_logging
setup_logging("info", "text")
log = logging.getLogger("genofed.agent.rounds")
log.error("broken")
log.warning("consent is now paused")
log.info("round 3: answered every stage")
"""


def _run(tmp_path: Path, journal: bool) -> str:
    out = tmp_path / f"stderr-{journal}"
    with out.open("wb") as fh:
        st = os.fstat(fh.fileno())
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        if journal:
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        subprocess.run([sys.executable, "-c", SNIPPET], stderr=fh, env=env, check=True,
                       timeout=60)
    return out.read_text()


def test_priorities_for_the_journal(tmp_path: Path) -> None:
    assert _run(tmp_path, journal=True).splitlines() == [
        "<3>genofed.agent.rounds: broken",
        "<4>genofed.agent.rounds: consent is now paused",
        "<6>genofed.agent.rounds: round 3: answered every stage"]


def test_plain_text_elsewhere(tmp_path: Path) -> None:
    lines = _run(tmp_path, journal=False).splitlines()
    assert len(lines) == 3 and not any(line.startswith("<") for line in lines)
    assert lines[2].endswith("INFO genofed.agent.rounds: round 3: answered every stage")


def test_a_journal_stream_that_is_not_stderr_is_ignored(tmp_path: Path) -> None:
    # systemd sets JOURNAL_STREAM for the service; a child whose stderr was redirected
    # elsewhere inherits it and must not prefix its lines.
    from genofed.cli.logs import stderr_is_journal

    assert not stderr_is_journal({"JOURNAL_STREAM": "1:1"})
    assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"})
