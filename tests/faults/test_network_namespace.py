"""A worker on another network, as on a second machine: a real ``studio worker`` in its own network
namespace, where the machine's loopback services cannot be reached, joins the studio through the host's
address on a veth pair (socat forwards that address to Postgres and Redis, which listen on loopback only),
takes a job submitted here and runs it once to success, writing into the same artifact root.

Needs root, ``ip`` (iproute2) and ``socat``; skipped without them, except with STUDIO_TEST_NETNS=1 (CI),
where it fails instead."""
from __future__ import annotations

import ipaddress
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

from models_db import Worker, session_scope
from tests.cli import stop_process, wait_until
from tests.faults.conftest import worker_id

DEFAULT_PORTS = {"redis": 6379, "postgresql": 5432}
# Run inside the namespace: can a TCP connection to argv[1]:argv[2] be opened? Prints "open" or the error.
PROBE = ("import socket, sys\n"
         "try:\n"
         "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()\n"
         "    print('open')\n"
         "except OSError as e:\n"
         "    print(type(e).__name__)\n")


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("STUDIO_TEST_NETNS") == "1":
        pytest.fail(f"STUDIO_TEST_NETNS=1 but {reason}")
    pytest.skip(reason)


def run(*args: str) -> str:
    p = subprocess.run(list(args), check=False, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` exited {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def free_subnet() -> ipaddress.IPv4Network:
    """A /30 in 10.203.0.0/16 that no interface here uses (tests running side by side pick their own)."""
    used = [ipaddress.IPv4Interface(line.split()[3]).network for line in run("ip", "-o", "-4", "addr", "show").splitlines()]
    candidates = list(ipaddress.IPv4Network("10.203.0.0/16").subnets(new_prefix=30))
    for net in random.sample(candidates, 64):
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free /30 in 10.203.0.0/16")


class Netns:
    """A network namespace joined to this one by a veth pair (host side ``.1``, namespace side ``.2``),
    plus socat forwarders on the host side: the only way out of the namespace."""

    def __init__(self, root: Path):
        token = uuid.uuid4().hex[:6]
        self.name, self.host_if, self.ns_if = f"studio-t{token}", f"stv{token}h", f"stv{token}n"
        self.root = root
        self.forwarders: list[subprocess.Popen] = []
        self.host_ip = self.ns_ip = ""

    @property
    def prefix(self) -> tuple[str, ...]:
        """Runs a command inside (``ip netns exec`` execs it in place: the pid stays the same)."""
        return ("ip", "netns", "exec", self.name)

    def create(self) -> None:
        self.host_ip, self.ns_ip = (str(a) for a in free_subnet().hosts())
        run("ip", "netns", "add", self.name)
        run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        run("ip", "link", "set", self.ns_if, "netns", self.name)
        run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        run("ip", "link", "set", self.host_if, "up")
        run(*self.prefix, "ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
        run(*self.prefix, "ip", "link", "set", self.ns_if, "up")
        run(*self.prefix, "ip", "link", "set", "lo", "up")  # its own loopback, up, and empty

    def forward(self, url: str) -> tuple[str, tuple[str, int]]:
        """Forward the host-side address to the service ``url`` names; returns ``url`` as seen from the
        namespace (its host replaced by the host-side address) and the (host, port) it points at."""
        parts = urlsplit(url)
        target = (parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme.split("+")[0]])
        with open(self.root / f"socat-{target[1]}.log", "ab") as log:  # its own session: the connections it forks are stopped with it
            self.forwarders.append(subprocess.Popen(
                ["socat", f"TCP-LISTEN:{target[1]},bind={self.host_ip},reuseaddr,fork", f"TCP:{target[0]}:{target[1]}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        wait_until(lambda: self.probe_host(target[1]), timeout=10, every=0.05)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{self.host_ip}:{target[1]}" if userinfo else f"{self.host_ip}:{target[1]}"
        return urlunsplit(parts._replace(netloc=netloc)), target

    def probe_host(self, port: int) -> bool:
        try:
            socket.create_connection((self.host_ip, port), timeout=1).close()
            return True
        except OSError:
            return False

    def probe_inside(self, host: str, port: int) -> str:
        return run(*self.prefix, sys.executable, "-c", PROBE, host, str(port)).strip()

    def inode(self) -> str:
        return f"net:[{os.stat(f'/run/netns/{self.name}').st_ino}]"

    def close(self) -> None:
        """Everything goes, whatever state the test left: processes inside, forwarders, veth, namespace."""
        try:
            for pid in run("ip", "netns", "pids", self.name).split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        except RuntimeError:
            pass  # the namespace was never created
        for proc in self.forwarders:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            stop_process(proc, grace=5)
        for args in (("ip", "link", "del", self.host_if), ("ip", "netns", "del", self.name)):
            try:
                run(*args)
            except RuntimeError:
                pass  # never created, or gone with the other


def peers(pid: int) -> set[tuple[str, int]]:
    """The remote ends of the established TCP connections in ``pid``'s network namespace."""
    out = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        remote, state = line.split()[2:4]
        if state == "01":  # TCP_ESTABLISHED
            ip, port = remote.split(":")
            out.add((str(ipaddress.IPv4Address(int(ip, 16).to_bytes(4, "little"))), int(port, 16)))
    return out


@pytest.fixture
def netns(tmp_path):
    if os.geteuid() != 0:
        unavailable("a network namespace needs root (CAP_NET_ADMIN); run as root")
    for tool in ("ip", "socat"):
        if shutil.which(tool) is None:
            unavailable(f"`{tool}` is not installed (apt-get install {'iproute2' if tool == 'ip' else tool})")
    ns = Netns(tmp_path)
    try:
        try:
            ns.create()
        except RuntimeError as e:
            unavailable(f"could not create a network namespace with a veth pair: {e}")
        yield ns
    finally:
        ns.close()


def test_worker_in_another_network_namespace_runs_a_job_once(netns, services_studio):
    s = services_studio
    db_url, pg = netns.forward(s.env["STUDIO_DATABASE_URL"])
    broker_url, redis = netns.forward(s.env["STUDIO_BROKER_URL"])

    # really another network: the services answer on loopback here, not inside; there only the veth way
    for host, port in (pg, redis):
        socket.create_connection((host, port), timeout=3).close()  # reachable here (else the next is moot)
        assert netns.probe_inside(host, port) != "open", f"{host}:{port} is reachable inside the namespace"
        assert netns.probe_inside(netns.host_ip, port) == "open"

    proc = s.start_worker(prefix=netns.prefix, STUDIO_DATABASE_URL=db_url, STUDIO_BROKER_URL=broker_url)
    wid = worker_id(proc)
    assert os.readlink(f"/proc/{proc.pid}/ns/net") == netns.inode() != os.readlink("/proc/self/ns/net")
    with session_scope() as db:
        row = db.get(Worker, wid)
        assert row is not None and row.host == socket.gethostname()
    # its database and broker connections go to the host-side address (there is no other way out)
    wait_until(lambda: {(netns.host_ip, pg[1]), (netns.host_ip, redis[1])} <= peers(proc.pid), timeout=10, every=0.1)

    job_id = s.submit(max_steps=12)
    job = s.wait_state(job_id, "succeeded", "failed", timeout=120)
    assert job.state == "succeeded", (job.error, s.log(job_id)[-2000:], s.worker_logs()[-2000:])
    # exactly once, on the namespaced worker: one attempt, its metrics, one version in the shared root
    assert job.worker_id == wid
    assert [(a["attempt"], a["worker"], a["outcome"]) for a in job.history] == [(1, wid, "succeeded")]
    assert s.loss_steps(job_id, 1) == list(range(1, 13))
    assert s.versions() == [job_id]
    assert (s.home / "versions" / f"job-{job_id}" / "adapter" / "adapter_model.safetensors").is_file()
    assert proc.poll() is None, "the namespaced worker died"
