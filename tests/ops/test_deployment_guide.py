"""docs/deployment.md gives the commands the operations tests run.

Each command an operator copies from the guide is compared with what the
tests under C{tests/ops/} execute (with the test's free ports and paths
written as the guide writes them), and every C{privydrop-admin} line and
settings line of the guide is checked against the real parser and the
settings table, so the guide cannot drift from what was tested.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from privydrop.admin.cli import parser
from privydrop.settings.sources import VARIABLES
from tests.ops.programs import NGINX_SHELL_FORMAT, ROOT
from tests.ops.test_systemd import (
    FD_NAME,
    SERVER_ARGS,
    VERIFY_ARGS,
    socket_activate_args,
)
from tests.sentinel_group import (
    MASTER_QUESTION,
    REPLICATION_INFO,
    SentinelGroup,
    sentinel_argv,
)

GUIDE = (ROOT / "docs" / "deployment.md").read_text()


def code_lines() -> list[str]:
    """Lines of the guide's code blocks, continuation lines joined."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", GUIDE, re.DOTALL)
    return [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()]


def test_nginx_template_is_filled_in_with_the_tested_envsubst_command() -> None:
    assert f"envsubst '{NGINX_SHELL_FORMAT}'" in GUIDE
    assert "< docker/nginx/privydrop.conf.template >" in GUIDE


def test_systemd_commands_are_the_tested_ones() -> None:
    server = " ".join(SERVER_ARGS)
    assert f"ExecStart=/opt/privydrop/.venv/bin/twistd {server}" in GUIDE
    assert "systemd-analyze " + " ".join(VERIFY_ARGS) in code_lines()
    activate = ["systemd-socket-activate", *socket_activate_args(3001), ".venv/bin/twistd", *SERVER_ARGS]
    assert shlex.join(activate) in code_lines()
    assert f"FileDescriptorName={FD_NAME}" in GUIDE


def test_coturn_is_started_as_the_tests_start_it() -> None:
    assert "docker/coturn/run-turnserver docker/coturn/turnserver.conf" in GUIDE


def test_every_privydrop_admin_line_parses() -> None:
    lines = [line for line in code_lines() if line.startswith("privydrop-admin ")]
    assert {shlex.split(line)[1] for line in lines} == {"referrers", "monitor", "cleanup"}
    for line in lines:
        words = shlex.split(line.split(">")[0])
        parser().parse_args(words[1:])


def test_every_setting_in_the_guide_is_known() -> None:
    known = {v.env for v in VARIABLES if v.env}
    block = GUIDE.split("/etc/privydrop/privydrop.env`", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    names = re.findall(r"^([A-Z_]+)=", block, re.MULTILINE)
    assert names and set(names) <= known


def _directive(line: str) -> str:
    """A configuration line's directive: C{requirepass}, C{sentinel monitor}..."""
    words = line.split()
    return " ".join(words[:2]) if words[0] == "sentinel" else words[0]


def test_sentinel_setup_is_the_tested_one(tmp_path: Path) -> None:
    """The Sentinel section configures what C{tests/sentinel_group.py} runs:
    the same directives for the replica and the Sentinels, the same way of
    starting a Sentinel, the same checks, and only settings the server knows."""
    section = GUIDE.split("### Redis with Sentinel", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```[a-z]*\n(.*?)```", section, re.DOTALL)
    replica_conf, sentinel_conf, environment, checks = blocks

    group = SentinelGroup(tmp_path, password="pw", sentinel_password="sentinel pw")
    replica_options = {arg[2:] for arg in group.replica.extra_args if arg.startswith("--")}
    assert {line.split()[0] for line in replica_conf.splitlines()} <= replica_options

    tested = {_directive(line) for line in group.sentinels[0].lines}
    assert {_directive(line) for line in sentinel_conf.splitlines()} <= tested
    config = "/etc/redis/sentinel.conf"
    assert sentinel_argv(Path(config))[1:] in ([config], [config, "--sentinel"])
    assert f"`redis-sentinel {config}`" in section

    known = {v.env for v in VARIABLES if v.env}
    names = re.findall(r"^([A-Z_]+)=", environment, re.MULTILINE)
    assert "REDIS_SENTINELS" in names and set(names) <= known

    asked = [line.split("--askpass ", 1)[1] for line in checks.splitlines()]
    assert asked == [" ".join(MASTER_QUESTION) + " privydrop", " ".join(REPLICATION_INFO)]
