"""docker/docker-compose.yml, checked without a Docker engine.

No Docker engine runs where the tests run, so the compose file is read as
data: it must mount exactly the nginx and coturn files that
C{test_nginx.py} and C{test_coturn.py} run for real, and every environment
variable it gives a container must be one that program knows: a setting of
the server (L{privydrop.settings.sources.VARIABLES}), a variable of the nginx
template, coturn's C{TURN_SECRET}. The backend's environment, with the
example values of C{compose.env.example}, must also pass the server's own
validation.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from privydrop.settings.sources import VARIABLES, settings_from_options
from tests.ops.programs import (
    COTURN_CONFIG,
    DOCKER,
    NGINX_SHELL_FORMAT,
    NGINX_TEMPLATE,
    NGINX_VARIABLES,
    RUN_TURNSERVER,
    envsubst,
)

COMPOSE = DOCKER / "docker-compose.yml"
EXAMPLE = DOCKER / "compose.env.example"
SETTINGS = {v.env for v in VARIABLES if v.env}
#: Example values for what compose.env.example leaves empty (secrets).
SECRETS = {"REDIS_PASSWORD": "an-example-redis-password", "TURN_SECRET": "an-example-turn-secret-0123"}


def example_values() -> dict[str, str]:
    values = {}
    for line in EXAMPLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value or SECRETS[name]
    return values


def interpolate(value: str, values: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:?message} and $$ (a literal $)."""
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return values[match.group(1)]

    return re.sub(r"\$\$|\$\{(\w+)(?::\?[^}]*)?\}", one, value)


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def environment(service: str) -> dict[str, str]:
    values = example_values()
    raw = compose()["services"][service].get("environment", {})
    return {name: interpolate(str(value), values) for name, value in raw.items()}


def mounted(service: str) -> dict[Path, str]:
    """Files of this repository a service mounts, and where."""
    found = {}
    for volume in compose()["services"][service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[(DOCKER / source).resolve()] = target
    return found


def test_the_services_of_a_deployment() -> None:
    assert set(compose()["services"]) == {"redis", "backend-1", "backend-2", "nginx", "coturn"}


def test_nginx_and_coturn_run_the_files_the_tests_run() -> None:
    """What the compose file deploys is what tests/ops started: same nginx template, coturn file, launcher."""
    nginx = mounted("nginx")
    assert nginx[NGINX_TEMPLATE.resolve()] == "/etc/nginx/templates/default.conf.template"
    coturn = mounted("coturn")
    config_target = coturn[COTURN_CONFIG.resolve()]
    launcher_target = coturn[RUN_TURNSERVER.resolve()]
    assert compose()["services"]["coturn"]["entrypoint"] == [launcher_target, config_target]
    repository_files = {p for service in compose()["services"] for p in mounted(service) if p.is_file()}
    assert repository_files == {NGINX_TEMPLATE.resolve(), COTURN_CONFIG.resolve(), RUN_TURNSERVER.resolve()}


def test_every_variable_given_to_a_program_is_one_it_knows() -> None:
    """A misspelt variable in the compose file would be silently ignored in production."""
    for backend in ("backend-1", "backend-2"):
        assert set(environment(backend)) <= SETTINGS
    assert set(environment("redis")) <= SETTINGS
    assert set(environment("nginx")) == set(NGINX_VARIABLES)
    assert set(environment("coturn")) == {"TURN_SECRET"}
    assert environment("coturn")["TURN_SECRET"] == environment("backend-1")["TURN_SECRET"]


def test_the_backend_environment_is_a_valid_production_configuration(tmp_path: Path) -> None:
    """The backends would start: production, Redis with its password, nginx as the only trusted proxy, TURN on."""
    settings = settings_from_options({}, environment("backend-1"), str(tmp_path))
    assert settings.production
    assert settings.redis is not None and settings.redis.host == "redis"
    assert settings.redis.password == environment("redis")["REDIS_PASSWORD"]
    nginx_address = compose()["services"]["nginx"]["networks"]["privydrop"]["ipv4_address"]
    assert settings.http.trusted_proxies == (nginx_address + "/32",)
    assert settings.turn.enabled
    assert settings.listen == "tcp:3001"
    upstream = environment("nginx")["PRIVYDROP_UPSTREAM_SERVERS"]
    assert upstream == "server backend-1:3001; server backend-2:3001;"


def test_the_nginx_template_is_complete_with_the_compose_values() -> None:
    """Every ${...} of the template gets a value, so nginx never sees a literal placeholder."""
    rendered = envsubst(NGINX_TEMPLATE, NGINX_SHELL_FORMAT, environment("nginx"))
    directives = [line for line in rendered.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in directives if "${" in line]
    assert "server backend-1:3001; server backend-2:3001;" in rendered


def test_redis_keeps_rooms_across_restarts_and_never_evicts_live_ones() -> None:
    """Append-only persistence on, and an eviction policy that does not drop live rooms."""
    command = " ".join(compose()["services"]["redis"]["command"])
    assert "--appendonly yes" in command
    policy = re.search(r"--maxmemory-policy (\S+)", command)
    assert policy is not None and policy.group(1) in ("noeviction", "volatile-ttl")
    assert '--requirepass "$$REDIS_PASSWORD"' in command
    assert "ports" not in compose()["services"]["redis"]


def test_the_example_env_file_names_every_variable_the_compose_file_needs() -> None:
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    assert used == set(example_values())
