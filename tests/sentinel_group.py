"""A real Redis master, its replica and three Sentinels on loopback, for tests.

L{SentinelGroup} starts, in a temporary directory: a master and one replica
(L{tests.redis_server.RedisServer}, with C{--replicaof}), then three
Sentinels monitoring the master with quorum 2, a short
C{down-after-milliseconds} (1 s) and C{failover-timeout} (3 s), so killing
the master promotes the replica within a few seconds. Each Sentinel's
configuration names the replica and the other Sentinels (with their ids), so
no discovery round (hello messages every 2 s) has to pass before a failover
can happen; L{SentinelGroup.start} returns once every Sentinel is linked to
the master, the replica and the other two.

The Sentinel binary is C{$PRIVYDROP_TEST_REDIS_SENTINEL}, or
C{redis-sentinel} on PATH (Debian's C{redis-sentinel} package, which
C{scripts/bootstrap --test} installs), or else the redis-server binary run
with C{--sentinel}, which every build supports.

Waiting for the group to be ready and for a failover polls the servers'
state with a bounded deadline: both are external processes that announce
nothing to the test.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socketserver
import threading
import time
from pathlib import Path
from typing import Any

from privydrop.settings import RedisSettings, SentinelSettings
from tests.redis_server import (
    HOST,
    POLL_INTERVAL_S,
    RedisServer,
    RedisServerError,
    _read_reply,
    redis_binary,
)

SENTINEL_BINARY_VARIABLE = "PRIVYDROP_TEST_REDIS_SENTINEL"

#: The name the Sentinels monitor the master under.
MASTER_NAME = "privydrop-test"
#: How long the master may be silent before a Sentinel thinks it is down.
DOWN_AFTER_MS = 1000
#: Sentinel's failover-timeout: also the pause before retrying a failed failover.
FAILOVER_TIMEOUT_MS = 3000
#: Longest wait for the group to be ready, or for a failover, seconds.
READY_TIMEOUT_S = 15.0
#: What the group asks a Sentinel, and the master, to know where things
#: stand (the deployment guide gives operators the same commands).
MASTER_QUESTION = ("SENTINEL", "get-master-addr-by-name")
REPLICATION_INFO = ("INFO", "replication")


def sentinel_argv(config: Path) -> list[str]:
    """How to run one Sentinel with this configuration file."""
    configured = os.environ.get(SENTINEL_BINARY_VARIABLE)
    found = shutil.which(configured or "redis-sentinel")
    if found is not None:
        return [found, str(config)]
    if configured:
        raise RedisServerError(f"{SENTINEL_BINARY_VARIABLE}={configured!r} not found")
    return [redis_binary(), str(config), "--sentinel"]


class SentinelServer(RedisServer):
    """One Sentinel process; L{RedisServer.command} talks to it.

    @ivar run_id: its C{myid}, which the other Sentinels' configuration names.
    """

    def __init__(
        self, workdir: Path, run_id: str, password: str | None = None
    ) -> None:
        super().__init__(workdir, password=password)
        self.run_id = run_id
        self.config = workdir / "sentinel.conf"
        self.lines: list[str] = []

    def _argv(self) -> list[str]:
        # Sentinel rewrites its configuration file: written once, kept.
        if not self.config.exists():
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.config.write_text("\n".join(self.lines) + "\n")
        return sentinel_argv(self.config)


def _pairs(flat: list[Any]) -> dict[str, Any]:
    return dict(zip(flat[::2], flat[1::2]))


class SentinelGroup:
    """A master, a replica and three Sentinels; see the module docstring.

    @ivar master: the server the Sentinels start with as master.
    @ivar replica: its replica, promoted when the master dies.
    @ivar sentinels: the Sentinels, in the order settings name them.
    """

    def __init__(
        self,
        workdir: Path,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        """
        @param password: the master's and replica's C{requirepass} (and
            C{masterauth}); the Sentinels get it as C{auth-pass}.
        @param sentinel_password: the Sentinels' own C{requirepass}.
        """
        self.password = password
        self.sentinel_password = sentinel_password
        auth = ("--masterauth", password) if password is not None else ()
        quick = ("--repl-diskless-sync-delay", "0")
        self.master = RedisServer(workdir / "master", password, extra_args=(*quick, *auth))
        self.replica = RedisServer(
            workdir / "replica",
            password,
            extra_args=(*quick, *auth, "--replicaof", HOST, str(self.master.port)),
        )
        self.sentinels = [
            SentinelServer(workdir / f"sentinel-{n}", secrets.token_hex(20), sentinel_password)
            for n in range(3)
        ]
        for sentinel in self.sentinels:
            sentinel.lines = self._config(sentinel)

    def _config(self, sentinel: SentinelServer) -> list[str]:
        name = MASTER_NAME
        lines = [
            f"port {sentinel.port}",
            f"bind {HOST}",
            f"dir {sentinel.workdir}",
            "loglevel warning",
            f"sentinel myid {sentinel.run_id}",
            f"sentinel monitor {name} {HOST} {self.master.port} 2",
            f"sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {name} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {name} 1",
            f"sentinel known-replica {name} {HOST} {self.replica.port}",
        ]
        if self.password is not None:
            lines.append(f'sentinel auth-pass {name} "{self.password}"')
        if self.sentinel_password is not None:
            lines.append(f'requirepass "{self.sentinel_password}"')
        for other in self.sentinels:
            if other is not sentinel:
                lines.append(f"sentinel known-sentinel {name} {HOST} {other.port} {other.run_id}")
        return lines

    # -- life ------------------------------------------------------------------

    def start(self) -> None:
        """Start everything; return once a failover could happen (bounded wait)."""
        try:
            self.master.start()
            self.replica.start()
            self._wait("the replica to be in sync", self._replica_online)
            for sentinel in self.sentinels:
                sentinel.start()
            self._wait("the Sentinels to link up", self._sentinels_linked)
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        for server in (*self.sentinels, self.replica, self.master):
            server.kill()

    def _wait(self, what: str, ready: Any) -> float:
        started = time.monotonic()
        deadline = started + READY_TIMEOUT_S
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if ready():
                    return time.monotonic() - started
            except (OSError, RedisServerError) as e:
                last = e
            time.sleep(POLL_INTERVAL_S)
        raise RedisServerError(f"timed out waiting for {what} ({last})")

    def _replica_online(self) -> bool:
        info = self.master.command(*REPLICATION_INFO)
        return f"port={self.replica.port},state=online" in info

    def _sentinels_linked(self) -> bool:
        for sentinel in self.sentinels:
            master = _pairs(sentinel.command("SENTINEL", "MASTER", MASTER_NAME))
            replicas = [_pairs(r) for r in sentinel.command("SENTINEL", "REPLICAS", MASTER_NAME)]
            others = [_pairs(s) for s in sentinel.command("SENTINEL", "SENTINELS", MASTER_NAME)]
            if master["flags"] != "master":
                return False
            if [r["flags"] for r in replicas] != ["slave"] or replicas[0][
                "master-link-status"
            ] != "ok":
                return False
            if len(others) != 2 or any(o["flags"] != "sentinel" for o in others):
                return False
        return True

    # -- what the Sentinels say ------------------------------------------------------

    def named_master(self) -> tuple[str, int] | None:
        """The master as the first Sentinel that answers names it."""
        for sentinel in self.sentinels:
            try:
                host, port = sentinel.command(*MASTER_QUESTION, MASTER_NAME, timeout=1.0)
            except (OSError, RedisServerError):
                continue
            return host, int(port)
        return None

    def promoted(self) -> bool:
        """Whether every Sentinel names the replica as master, and it says it is one."""
        for sentinel in self.sentinels:
            _, port = sentinel.command(*MASTER_QUESTION, MASTER_NAME, timeout=1.0)
            if int(port) != self.replica.port:
                return False
        return bool(self.replica.command("ROLE", timeout=1.0)[0] == "master")

    # -- what the server is given ---------------------------------------------------

    @property
    def addresses(self) -> str:
        """C{REDIS_SENTINELS}: every Sentinel, C{host:port,...}."""
        return ",".join(f"{HOST}:{s.port}" for s in self.sentinels)

    def environ(self, db: int = 0, **more: str) -> dict[str, str]:
        """The variables an operator sets for this group (plus C{more})."""
        variables = {
            "REDIS_SENTINELS": self.addresses,
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
            "REDIS_DB": str(db),
        }
        if self.password is not None:
            variables["REDIS_PASSWORD"] = self.password
        if self.sentinel_password is not None:
            variables["REDIS_SENTINEL_PASSWORD"] = self.sentinel_password
        variables.update(more)
        return variables

    def settings(self, **overrides: Any) -> RedisSettings:
        """Redis settings through these Sentinels; C{overrides} replace any field
        (C{sentinel_*} ones the Sentinel settings' fields)."""
        sentinel_fields: dict[str, Any] = {
            "addresses": tuple((HOST, s.port) for s in self.sentinels),
            "master": MASTER_NAME,
            "password": self.sentinel_password,
        }
        for key in [k for k in overrides if k.startswith("sentinel_")]:
            sentinel_fields[key[len("sentinel_"):]] = overrides.pop(key)
        fields: dict[str, Any] = {
            "password": self.password,
            "command_timeout": 2.0,
            "connect_timeout": 2.0,
            "pool_size": 2,
            "sentinel": SentinelSettings(**sentinel_fields),
        }
        fields.update(overrides)
        return RedisSettings(**fields)




class StaleSentinel:
    """A Sentinel whose view is out of date: it names whatever address it is told.

    A real TCP server on loopback (in a thread, so blocking and reactor
    clients alike can ask it) that answers C{SENTINEL get-master-addr-by-name
    <master>} with L{names}, and C{AUTH} with C{+OK}. It stands in for what
    real Sentinels do only in a narrow window (naming a server that has just
    become a replica, or naming one server and then another), so that window
    can be tested on purpose.

    @ivar names: the C{(host, port)} it answers with; change it at will.
    @ivar questions: how many times it was asked.
    """

    def __init__(self, names: tuple[str, int]) -> None:
        self.names = names
        self.questions = 0
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while True:
                    try:
                        command = _read_reply(self.rfile)
                    except RedisServerError:
                        return  # the client closed the connection
                    if command[0].upper() == "AUTH":
                        self.wfile.write(b"+OK\r\n")
                        continue
                    owner.questions += 1
                    host, port = (x.encode() for x in (owner.names[0], str(owner.names[1])))
                    self.wfile.write(
                        b"*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(host), host, len(port), port)
                    )

        self._server = socketserver.ThreadingTCPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
