"""`flchain deployment-demo --participants N --rounds R --out DIR`: a whole deployment on loopback.

Everything docs/deployment.md describes, each party in its own directory under DIR:
anvil (its chain kept in the run directory when it stops), the admin's keystore and the
federation (`flchain deploy`), each organization's keys (`flchain keys org`) admitted
from its card (`flchain members add --card`), a SuperLink with TLS and SuperNode
authentication (`flchain keys superlink`, `flwr supernode register`), one SuperNode per
organization with its own keys, data file and store in its node config, and the
aggregator's ServerApp through `flwr run`. The run directory is then checked with
`flchain verify`. Every process started is stopped on exit, on error, on Ctrl-C and on
SIGTERM: each runs in its own session and carries a marker in its environment, so the
processes Flower spawns for it are found and stopped as well.
"""

from __future__ import annotations

import argparse
import csv
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType

from fl_chain import cli
from fl_chain.chain import rpc
from fl_chain.chain.accounts import write_keystore
from fl_chain.chain.anvil import AnvilNode
from fl_chain.chain.history import HISTORY_FILE, export_history
from fl_chain.errors import FlChainError, UsageError
from fl_chain.orgkeys import MemberCard, OrgFiles, generate_org, superlink_tls

BIN = Path(sys.executable).parent
REPO_ROOT = Path(__file__).resolve().parent.parent
CONNECTION = "fl-chain-demo"  # the SuperLink connection in the demo's own FLWR_HOME
MARKER = "FLCHAIN_DEPLOYMENT_DEMO"  # environment variable naming the demo every started process belongs to
STARTUP_TIMEOUT = 60.0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("deployment-demo", help="run a whole multi-organization deployment on loopback",
                                   description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--participants", type=int, default=3, metavar="N", help="organizations (default 3)")
    parser.add_argument("--rounds", type=int, default=2, metavar="R", help="rounds (default 2)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="a new directory for everything")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides of the experiment (e.g. task.epochs=2)")
    parser.set_defaults(handler=handle, passes_unknown_arguments=True)


def handle(args: argparse.Namespace) -> int:
    if args.participants < 2:
        raise UsageError(f"--participants must be at least 2, got {args.participants}")
    if args.rounds < 1:
        raise UsageError(f"--rounds must be at least 1, got {args.rounds}")
    out: Path = args.out.resolve()
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file: --out names a new directory for the whole deployment")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty: the demo writes a whole deployment; choose a new --out")
    validators = min(2, args.participants)
    overrides = ["task=breast_cancer", "partition=iid", f"num_participants={args.participants}",
                 f"rounds={args.rounds}", f"quorum={args.participants - 1}", f"num_validators={validators}",
                 f"attestation_threshold={validators}", *args.overrides]
    with _stopping_on_signals(), Demo(out, args.participants, validators, overrides) as demo:
        run_dir = demo.run()
    print(f"[demo] verifying {run_dir}", flush=True)
    return cli.main(["verify", str(run_dir)])


@contextmanager
def _stopping_on_signals() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every started process is stopped on the way out."""
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Demo:
    """The parties' directories under `out`, and the processes started for them."""

    def __init__(self, out: Path, participants: int, validators: int, overrides: list[str]) -> None:
        self.out, self.participants, self.validators, self.overrides = out, participants, validators, overrides
        self.marker = secrets.token_hex(8)
        self.environment = {**os.environ, MARKER: self.marker, "FLWR_HOME": str(out / "flwr-home"),
                            "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        self._stack = ExitStack()
        self._processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Demo:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "logs").mkdir(exist_ok=True)
        self._stack.callback(self._stop_processes)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    # ------------------------------------------------------------ the deployment, in order

    def run(self) -> Path:
        anvil = self._stack.enter_context(AnvilNode())
        _say(f"anvil on {anvil.url}")
        federation_file = self._deploy(anvil.url)
        aggregator = self._organization("aggregator", anvil.url)
        self._admit(anvil.url, federation_file, aggregator, "aggregator", appoint=True)
        orgs = [self._organization(f"org-{index}", anvil.url) for index in range(self.participants)]
        for index, org in enumerate(orgs):
            roles = "participant,validator" if index < self.validators else "participant"
            self._admit(anvil.url, federation_file, org, roles)
        self._write_data_slices(orgs)
        port = self.start_superlink()
        for org in orgs:
            self._flwr(["supernode", "register", str(OrgFiles(org / "keys").node_auth_public), CONNECTION])
        _say(f"registered {len(orgs)} SuperNode public keys with the SuperLink")
        for org in orgs:
            self._start_supernode(org, port, anvil.url, federation_file)
        aggregator_file = self._write_aggregator_file(aggregator, anvil.url, federation_file)
        run_dir = self._run_server_app(aggregator_file)
        transactions = export_history(rpc.connect(anvil.url).web3, run_dir / HISTORY_FILE)
        _say(f"the chain's {transactions} signed transactions kept in {run_dir / HISTORY_FILE}")
        anvil.stop()
        shutil.copytree(aggregator / "store", run_dir / "store", dirs_exist_ok=True)
        _say(f"run directory {run_dir}")
        return run_dir

    def _deploy(self, url: str) -> Path:
        admin = self.out / "admin"
        keystore, password = self._keystore(admin)
        rpc.fund(rpc.connect(url), [_address_of(keystore)])
        federation_file = self.out / "federation" / "federation.json"
        _cli(["deploy", "--out", str(federation_file), "chain=rpc", f"chain.url={url}", f"chain.keystore={keystore}",
              f"chain.password_file={password}", *self.overrides])
        _say(f"federation deployed by the admin: {federation_file}")
        return federation_file

    def _keystore(self, directory: Path) -> tuple[Path, Path]:
        """The admin's keystore, for which the demo makes up a password (kept in a file)."""
        from eth_account import Account

        directory.mkdir(parents=True, exist_ok=True)
        password = _password_file(directory / "password")
        keystore = directory / "account.json"
        write_keystore(Account.create(), keystore, password.read_text())
        return keystore, password

    def _organization(self, name: str, url: str) -> Path:
        directory = self.out / name
        directory.mkdir(parents=True)
        password = _password_file(directory / "password")
        card = generate_org(name, directory / "keys", password.read_text())
        rpc.fund(rpc.connect(url), [card.address])  # gas money: on a real chain, the organization's own
        (directory / "store").mkdir()
        return directory

    def _admit(self, url: str, federation_file: Path, org: Path, roles: str, appoint: bool = False) -> None:
        card = OrgFiles(org / "keys").card
        _cli(["members", "add", "--federation", str(federation_file), "--url", url, "--keystore",
              str(self.out / "admin" / "account.json"), "--password-file", str(self.out / "admin" / "password"),
              "--card", str(card), "--roles", roles, *(["--aggregator"] if appoint else [])])

    def _write_data_slices(self, orgs: Sequence[Path]) -> None:
        """Each organization's data: its share of breast_cancer as a CSV file of its own."""
        from aggregator.config import compose_experiment
        from fl_chain.tasks.catalog import open_task, run_shape

        experiment = compose_experiment(self.overrides)
        dataset = open_task(experiment).dataset(run_shape(experiment))  # type: ignore[attr-defined]
        for org, share in zip(orgs, dataset.participants):
            rows = [*zip(share.train_x, share.train_y), *zip(share.test_x, share.test_y)]
            with open(org / "data.csv", "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow([*dataset.feature_names, "target"])
                writer.writerows([*(f"{value:.6g}" for value in x), int(y)] for x, y in rows)
        _say(f"wrote {len(orgs)} data files (each organization's share of breast_cancer)")

    def start_superlink(self) -> int:
        tls = superlink_tls(self.out / "superlink" / "tls", ["127.0.0.1", "localhost"])
        port = _free_port()
        home = self.out / "flwr-home"
        home.mkdir()
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{port}"\nroot-certificates = "{tls.ca_certificate}"\n')
        self.start("superlink", [
            str(BIN / "flower-superlink"), "--ssl-certfile", str(tls.server_certificate),
            "--ssl-keyfile", str(tls.server_key), "--ssl-ca-certfile", str(tls.ca_certificate),
            "--enable-supernode-auth", "--host", "127.0.0.1", "--port", str(port),
            "--database", str(self.out / "superlink" / "state.db"), "--disable-runtime-dependency-installation",
        ])
        _wait_for_port(port)
        _say(f"SuperLink on 127.0.0.1:{port} (TLS, SuperNode authentication)")
        return port

    def _start_supernode(self, org: Path, superlink_port: int, url: str, federation_file: Path) -> None:
        keys = OrgFiles(org / "keys")
        node_config = " ".join(f'{key}="{value}"' for key, value in {
            "keystore": keys.keystore, "password-file": org / "password", "x25519-key": keys.x25519_key,
            "federation-file": federation_file, "chain-url": url, "data-file": org / "data.csv",
            "target": "target", "store-dir": org / "store"}.items())
        self.start(org.name, [
            str(BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{superlink_port}",
            "--root-certificates", str(self.out / "superlink" / "tls" / "ca.crt"),
            "--auth-supernode-private-key", str(keys.node_auth_private), "--port", str(_free_port()),
            "--node-config", node_config,
        ])
        _say(f"SuperNode of {org.name} started ({MemberCard.read(keys.card).address})")

    def _write_aggregator_file(self, aggregator: Path, url: str, federation_file: Path) -> Path:
        from aggregator.deployment import AggregatorFile

        keys = OrgFiles(aggregator / "keys")
        path = aggregator / "aggregator.json"
        AggregatorFile(federation_file, url, keys.keystore, aggregator / "password", keys.x25519_key,
                       aggregator / "store").write(path)
        return path

    def _run_server_app(self, aggregator_file: Path) -> Path:
        runs = self.out / "runs"
        run_config = (f'deployment="{aggregator_file}" run-dir="{runs}" '
                      f'overrides="{shlex.join(self.overrides)}"')
        _say("running the aggregator's ServerApp: flwr run")
        process = self.start("flwr-run", [str(BIN / "flwr"), "run", str(REPO_ROOT), CONNECTION, "--stream",
                                           "--run-config", run_config], log=False)
        code = process.wait()
        if code != 0:
            raise FlChainError(f"flwr run failed (exit {code}); the logs are in {self.out / 'logs'}")
        done = [path for path in runs.iterdir() if (path / "summary.json").is_file()] if runs.is_dir() else []
        if len(done) != 1:
            raise FlChainError(f"the ServerApp wrote no finished run directory under {runs}; see {self.out / 'logs'}")
        return done[0]

    # ------------------------------------------------------------ processes

    def start(self, name: str, command: list[str], log: bool = True) -> subprocess.Popen[bytes]:
        output = open(self.out / "logs" / f"{name}.log", "wb") if log else None  # noqa: SIM115 - closed with the demo
        if output is not None:
            self._stack.callback(output.close)
        process = subprocess.Popen(command, env=self.environment, cwd=REPO_ROOT, stdout=output,
                                   stderr=subprocess.STDOUT if log else None, start_new_session=True)
        self._processes.append(process)
        return process

    def _flwr(self, arguments: list[str]) -> None:
        completed = subprocess.run([str(BIN / "flwr"), *arguments], env=self.environment, cwd=self.out,
                                   capture_output=True, text=True, timeout=STARTUP_TIMEOUT)
        if completed.returncode != 0:
            raise FlChainError(f"flwr {' '.join(arguments[:2])} failed: {(completed.stdout + completed.stderr)[-500:]}")

    def _stop_processes(self) -> None:
        """Stops each started process's session, then anything else carrying the demo's marker."""
        for process in reversed(self._processes):
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in self._processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        for pid in marked_processes(self.marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def marked_processes(marker: str) -> list[int]:
    """Processes whose environment carries this demo's marker (Flower's detached helpers)."""
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _cli(arguments: list[str]) -> None:
    code = cli.main(arguments)
    if code != 0:
        raise FlChainError(f"flchain {arguments[0]} failed (exit {code})")


def _password_file(path: Path) -> Path:
    """A made-up password in a file only its owner can read: how a site would keep it."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_urlsafe(18))
    return path


def _address_of(keystore: Path) -> str:
    import json

    return "0x" + str(json.loads(keystore.read_text())["address"]).removeprefix("0x")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise FlChainError(f"the SuperLink did not listen on port {port} within {STARTUP_TIMEOUT:.0f} s")


def _say(text: str) -> None:
    print(f"[demo] {text}", flush=True)
