"""The deployment files: Dockerfile, compose stack, Kubernetes manifests and systemd unit.

Nothing here needs a Docker engine, a cluster or systemd as init. What the image would run is
built the way the Dockerfile builds it (wheel, venv, install) and started from that venv; the
rest is checked by the tools that own each format (hadolint, the compose-spec schema, promtool,
amtool, kubernetes-validate, systemd-analyze) plus the cross-file facts no single tool sees:
ports, paths, names and the token's route from a file into the process. README.md's install
recipes are run as written, in a temporary root (``Recipe``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from exporter import __version__
from exporter.settings.loading import load
from exporter.settings.model import DEFAULT_PORT, OPTIONS, Settings, SettingsError, read_environment

from .processes import ROOT, exporter, free_port, simulator, wait_until
from .prometheus_server import prometheus
from .scrape import one, parse, values
from .test_webconfig import make_pki

DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
COMPOSE_LIVE = DEPLOY / "docker-compose.live.yml"
DEMO_ACCOUNTS = DEPLOY / "exporter" / "accounts.demo.yml"
LIVE_ACCOUNTS = DEPLOY / "exporter" / "accounts.live.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DEMO_TARGETS = DEPLOY / "prometheus" / "targets" / "evotic.yml"
LIVE_TARGETS = DEPLOY / "prometheus" / "targets.live" / "evotic.yml"
RULES_DIR = DEPLOY / "prometheus" / "rules"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
K8S = DEPLOY / "kubernetes"
K8S_BASE = K8S / "base"
UNIT = DEPLOY / "systemd" / "evotic-exporter.service"
UNIT_ENV = DEPLOY / "systemd" / "evotic-exporter.env"
DROP_IN = DEPLOY / "systemd" / "evotic-exporter.service.d" / "web-config.conf"
ACCOUNTS_DROP_IN = DROP_IN.parent / "accounts.conf"
README = ROOT / "README.md"

# An older release the manifests should still suit, and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())


def tool(name: str) -> str:
    """A command-line tool from this venv or PATH; a missing one fails, it does not skip."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed: tests/run.sh installs it"
    return found


def run(
    *argv: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------- Dockerfile


@dataclass
class Instruction:
    keyword: str
    args: str


def dockerfile_stages() -> list[list[Instruction]]:
    """The Dockerfile's instructions, continuation lines joined, split into stages at FROM."""
    stages: list[list[Instruction]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue  # comments and blank lines, also inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(keyword.upper(), " ".join(args.split())))
    return stages


def only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the stage, found {len(found)}"
    return found[0]


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    # Docker's matching: Go's filepath.Match, plus "**" for any number of directories.
    pieces = re.split(r"(\*\*/|\*|\?|\[[^\]]*\])", pattern)
    regex = ""
    for piece in pieces:
        if piece == "**/":
            regex += "(?:.*/)?"
        elif piece == "*":
            regex += "[^/]*"
        elif piece == "?":
            regex += "[^/]"
        elif piece.startswith("["):
            regex += piece
        else:
            regex += re.escape(piece)
    return re.compile(regex)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether ``path`` (relative to the context) is left out; the last matching line wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for line in patterns:
        negate = line.startswith("!")
        regex = _glob_regex(line.removeprefix("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def test_dockerfile_is_hadolint_clean() -> None:
    result = run(tool("hadolint"), "--failure-threshold", "warning", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_pinned_and_unprivileged() -> None:
    builder, final = dockerfile_stages()
    base, _, name = builder[0].args.partition(" AS ")
    assert name == "builder"
    # Same exact base in both stages: the venv's interpreter link must resolve in the final one.
    assert final[0].args == base
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", base), base

    # The final stage only receives the venv: no source, no wheel, no build step at all.
    copies = [i.args for i in final if i.keyword == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    assert not [i for i in final if i.keyword in ("RUN", "ADD")]

    uid, _, gid = only(final, "USER").args.partition(":")
    assert int(uid) > 0
    assert int(gid) > 0
    assert only(final, "EXPOSE").args == str(DEFAULT_PORT)
    assert json.loads(only(final, "ENTRYPOINT").args) == ["/opt/venv/bin/evotic-exporter"]
    env = dict(
        pair.split("=", 1) for i in final if i.keyword == "ENV" for pair in shlex.split(i.args)
    )
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    check = healthcheck_command()
    assert f"127.0.0.1:{DEFAULT_PORT}/healthz" in " ".join(check)


def test_dockerignore_admits_exactly_the_build_inputs() -> None:
    patterns = dockerignore_patterns()
    for source in builder_sources():
        assert not dockerignored(source, patterns), source
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which is missing"
    assert not dockerignored("simulator/app.py", patterns)
    for stray in (
        ".venv/bin/python",
        ".git/config",
        "tests/test_e2e.py",
        "deploy/.env",
        "exporter/__pycache__/cli.cpython-311.pyc",
        "simulator/x.pyc",
    ):
        assert dockerignored(stray, patterns), stray


def builder_sources() -> list[str]:
    """What the builder stage copies from the context (each COPY's arguments but the last)."""
    builder = dockerfile_stages()[0]
    sources = []
    for instruction in builder:
        if instruction.keyword == "COPY":
            *paths, _destination = instruction.args.split()
            assert not any(p.startswith("--") for p in paths), instruction
            sources += [p.rstrip("/") for p in paths]
    return sources


def healthcheck_command() -> list[str]:
    args = only(dockerfile_stages()[1], "HEALTHCHECK").args
    command: list[str] = json.loads(args[args.index(" CMD ") + len(" CMD ") :])
    return command


@dataclass
class Image:
    """The image's /opt/venv, built outside Docker the way the Dockerfile builds it."""

    venv: Path
    workdir: Path

    def path(self, image_path: str) -> str:
        return image_path.replace("/opt/venv", str(self.venv))

    def entrypoint(self) -> list[str]:
        return [self.path(p) for p in json.loads(only(dockerfile_stages()[1], "ENTRYPOINT").args)]

    def env(self) -> dict[str, str]:
        """The final stage's ENV, over a clean environment (no EVOTIC_*, no PYTHONPATH)."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        for instruction in dockerfile_stages()[1]:
            if instruction.keyword == "ENV":
                for pair in shlex.split(instruction.args):
                    key, _, value = pair.partition("=")
                    env[key] = self.path(value.replace("$PATH", env["PATH"]))
        return env


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    run_line = " ".join(i.args for i in dockerfile_stages()[0] if i.keyword == "RUN")
    # The steps below are these, with the image's paths moved into a temporary directory.
    for step in (
        "pip wheel --no-deps --wheel-dir /wheels .",
        "python -m venv --without-pip /opt/venv",
        "pip --python /opt/venv/bin/python install /wheels/*.whl",
        "pip --python /opt/venv/bin/python check",
    ):
        assert step in run_line, f"the Dockerfile no longer runs {step!r}"

    root = tmp_path_factory.mktemp("image")
    context, wheels, venv = root / "src", root / "wheels", root / "venv"
    patterns = dockerignore_patterns()
    for source in builder_sources():
        origin = ROOT / source
        files = [origin] if origin.is_file() else sorted(origin.rglob("*"))
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if file.is_file() and not dockerignored(relative, patterns):
                (context / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, context / relative)

    pip = (sys.executable, "-m", "pip", "--disable-pip-version-check")
    python = str(venv / "bin" / "python")

    def step(*argv: str) -> None:
        result = run(*argv, cwd=root)
        assert result.returncode == 0, f"{argv}\n{result.stdout}\n{result.stderr}"

    step(*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(context))
    step(sys.executable, "-m", "venv", "--without-pip", str(venv))
    step(*pip, "--python", python, "install", "-q", *map(str, wheels.glob("*.whl")))
    step(*pip, "--python", python, "check")
    return Image(venv=venv, workdir=root)


@contextlib.contextmanager
def image_process(image: Image, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    log = image.workdir / "exporter.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [*image.entrypoint(), *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=image.env(),
            cwd=image.workdir,
        )
    try:
        yield process, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.e2e
def test_image_installs_the_whole_package(image: Image) -> None:
    site = next(image.venv.glob("lib/python3.*/site-packages"))
    wanted = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "exporter").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    installed = {
        p.relative_to(site).as_posix()
        for p in (site / "exporter").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert wanted - installed == set(), "files of the package missing from the wheel"
    # pip byte-compiled the package, so the read-only image never has to.
    assert list((site / "exporter").glob("__pycache__/*.pyc"))


@pytest.mark.e2e
def test_image_writes_the_dashboards_and_rules_it_ships(image: Image) -> None:
    site = next(image.venv.glob("lib/python3.*/site-packages"))
    for command, source, pattern in (("dashboards", ROOT / "grafana" / "dashboards", "*.json"),
                                     ("rules", RULES_DIR, "*.rules.yml")):  # fmt: skip
        expected = {path.name: path.read_bytes() for path in sorted(source.glob(pattern))}
        assert expected, source
        shipped = site / "exporter" / "assets" / command
        assert {path.name: path.read_bytes() for path in shipped.iterdir()} == expected
        output = image.workdir / "out" / command
        result = run(*image.entrypoint(), command, "--output", str(output), cwd=image.workdir,
                     env=image.env())  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert {path.name: path.read_bytes() for path in output.iterdir()} == expected


@pytest.mark.e2e
def test_image_checks_an_account(image: Image) -> None:
    result = run(*image.entrypoint(), "check", "--demo", cwd=image.workdir, env=image.env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^default +yes +yes ", result.stdout, re.M), result.stdout


@pytest.mark.e2e
def test_image_entrypoint_serves_metrics_and_passes_its_healthcheck(image: Image) -> None:
    version = run(*image.entrypoint(), "--version", cwd=image.workdir)
    assert version.stdout.split() == ["evotic-exporter", __version__]

    port = free_port()
    with image_process(image, "--demo", "--web.listen-address", f"127.0.0.1:{port}") as (
        process,
        log,
    ):
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            output = log.read_text(encoding="utf-8", errors="replace")
            assert process.poll() is None, f"the exporter exited:\n{output}"
            return httpx.get(f"{url}/readyz").status_code == 200

        wait_until(ready, timeout=30, what="the image's exporter to be ready")
        metrics = httpx.get(f"{url}/metrics").text
        assert "\nevotic_up 1.0\n" in metrics
        assert "evotic_server_info{" in metrics

        # The HEALTHCHECK, as Docker would run it inside the container (port aside).
        check = [
            image.path(p).replace(f":{DEFAULT_PORT}/", f":{port}/") for p in healthcheck_command()
        ]
        assert run(*check, cwd=image.workdir).returncode == 0

        process.send_signal(signal.SIGTERM)
        # Within the systemd unit's TimeoutStopSec and the pod's grace period.
        assert process.wait(timeout=10) == 0


@pytest.mark.e2e
def test_image_exits_2_on_invalid_settings(image: Image) -> None:
    # The systemd unit's RestartPreventExitStatus=2 relies on this.
    with image_process(image, "--poll.interval", "0") as (process, log):
        assert process.wait(timeout=30) == 2
    assert "invalid setting" in log.read_text(encoding="utf-8")


# --------------------------------------------------------------------------------- compose


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


def service_mounts(service: dict[str, Any]) -> dict[str, str]:
    """``{container path: source}`` of a service's volumes (short syntax)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_mode = volume.split(":")
        mounts[target] = source
    return mounts


def in_repo(service: dict[str, Any], container_path: str) -> Path:
    """The file of the repository that ``container_path`` is in a service's container."""
    path = PurePosixPath(container_path)
    mounts = sorted(service_mounts(service).items(), key=lambda mount: -len(mount[0]))
    for target, source in mounts:
        if source.startswith(".") and path.is_relative_to(target):
            return (DEPLOY / source / path.relative_to(target)).resolve()
    raise AssertionError(f"{container_path} is in none of the service's bind mounts")


def in_repo_argument(service: dict[str, Any], argument: str) -> str:
    """A command-line argument with the path inside the container taken to the repository."""
    flag, equals, value = argument.partition("=")
    return f"{flag}={in_repo(service, value)}" if equals and value.startswith("/") else argument


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A service as compose merges an override file's service into it, for the keys this
    stack's override uses: ``volumes`` unique by their path in the container, any other key
    replaced (for ``command`` that is compose's rule; the others are only in the override)."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if key == "volumes":
            mounts = {volume.split(":")[1]: volume for volume in result.get("volumes", [])}
            mounts.update({volume.split(":")[1]: volume for volume in value})
            result["volumes"] = list(mounts.values())
        else:
            result[key] = value
    return result


def probe_targets_file() -> PurePosixPath:
    """Where the ``evotic`` job's targets file is in the Prometheus container."""
    prometheus_service = compose()["services"]["prometheus"]
    config_dir = PurePosixPath(prometheus_service["command"][0].split("=", 1)[1]).parent
    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    (sd_config,) = jobs["evotic"]["file_sd_configs"]
    (targets,) = sd_config["files"]
    return config_dir / targets


def config_file_argument(command: list[str]) -> str:
    (path,) = [arg.split("=", 1)[1] for arg in command if arg.startswith("--config.file=")]
    return path


def account_names(path: Path) -> list[str]:
    """The accounts of a configuration file of the exporter, in the order it lists them."""
    return list(load_yaml(path)["accounts"])


def file_sd_targets(path: Path) -> list[str]:
    """The targets of a Prometheus file_sd file."""
    return [target for group in load_yaml(path) for target in group["targets"]]


def published(service: dict[str, Any]) -> dict[int, str]:
    """``{container port: bind address}``."""
    ports = {}
    for entry in service.get("ports", []):
        bind, _host, container = entry.rsplit(":", 2)
        ports[int(container)] = bind
    return ports


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_LIVE], ids=lambda p: p.name)
def test_compose_files_match_the_compose_spec(path: Path) -> None:
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_stack_has_the_four_services_pinned() -> None:
    services = compose()["services"]
    assert set(services) == {"exporter", "prometheus", "alertmanager", "grafana"}
    exporter = services["exporter"]
    assert (DEPLOY / exporter["build"]["context"]).resolve() == ROOT
    assert (ROOT / exporter["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert exporter["read_only"] is True
    for name, service in services.items():
        repository, _, tag = service["image"].rpartition(":")
        assert repository, name
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {service['image']}"
    assert exporter["image"] == f"evotic-exporter:{__version__}"


def test_compose_bind_mounts_exist_and_volumes_are_declared() -> None:
    data = compose()
    for name, service in data["services"].items():
        for target, source in service_mounts(service).items():
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name}: {source} -> {target}"
            else:
                assert source in data["volumes"], f"{name}: undeclared volume {source}"


def test_compose_ports_are_local_by_default() -> None:
    services = compose()["services"]
    expected = {"exporter": DEFAULT_PORT, "prometheus": 9090, "alertmanager": 9093, "grafana": 3000}
    for name, port in expected.items():
        ports = published(services[name])
        assert list(ports) == [port], name
        assert ports[port] == "${BIND_ADDRESS:-127.0.0.1}", name


def test_compose_variables_are_documented_in_the_env_example() -> None:
    documented = set(
        re.findall(r"^([A-Z_]+)=", (DEPLOY / ".env.example").read_text(encoding="utf-8"), re.M)
    )
    used = set()
    for path in (COMPOSE, COMPOSE_LIVE):
        used |= set(re.findall(r"\$\{([A-Z_]+)", path.read_text(encoding="utf-8")))
    assert used == documented


def test_prometheus_scrapes_the_exporter_and_finds_the_rules() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    services = compose()["services"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = jobs["evotic-exporter"]["static_configs"][0]["targets"]
    assert targets == [f"exporter:{next(iter(published(services['exporter'])))}"]
    alertmanagers = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == [f"alertmanager:{next(iter(published(services['alertmanager'])))}"]

    # The rules sit beside the config in the container as in the repository, so the relative
    # glob resolves to the same files in both, and promtool checks what Prometheus will load.
    mounts = {source: target for target, source in service_mounts(services["prometheus"]).items()}
    config_target = Path(mounts["./prometheus/prometheus.yml"])
    assert config_target == Path("/etc/prometheus/prometheus.yml")
    assert services["prometheus"]["command"][0] == f"--config.file={config_target}"
    for pattern in config["rule_files"]:
        rules_target = Path(mounts["./prometheus/rules"])
        assert (config_target.parent / pattern).parent == rules_target
        assert sorted(PROMETHEUS_CONFIG.parent.glob(pattern)) == sorted(
            RULES_DIR.glob("*.rules.yml")
        )
    assert list(RULES_DIR.glob("*.rules.yml")), "no rule files in deploy/prometheus/rules"


def test_promtool_accepts_the_config_and_every_rule_file() -> None:
    result = run(tool("promtool"), "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    # promtool only warns about a missing file_sd file, and checks one that exists.
    assert "WARNING" not in output, output
    for path in RULES_DIR.glob("*.rules.yml"):
        assert f"Checking {path}" in output or f"Checking {path.relative_to(ROOT)}" in output


def test_compose_demo_serves_two_simulated_accounts_from_a_mounted_file() -> None:
    service = compose()["services"]["exporter"]
    command = service["command"]
    assert command[0] == "--demo"
    assert in_repo(service, config_file_argument(command)) == DEMO_ACCOUNTS
    assert all(volume.endswith(":ro") for volume in service["volumes"])
    # Reloads go by SIGHUP (docker compose kill -s SIGHUP exporter): no POST /-/reload.
    assert "--web.enable-lifecycle" not in command
    # The exporter's own loader, given the command as the container runs it.
    loaded = load([in_repo_argument(service, arg) for arg in command], {})
    assert list(loaded.accounts) == account_names(DEMO_ACCOUNTS)
    assert len(loaded.accounts) == 2
    assert all(account.settings.demo for account in loaded.accounts.values())
    # Each account may differ from the others: the demo shows one setting of its own.
    intervals = {account.settings.poll_interval for account in loaded.accounts.values()}
    assert len(intervals) == 2


# The relabelling of the `evotic` job, the exporter's address aside.
PROBE_RELABELING = [
    {"source_labels": ["__address__"], "target_label": "__param_target"},
    {"source_labels": ["__param_target"], "target_label": "account"},
]


def test_prometheus_probes_each_account_of_the_demo_at_the_one_exporter() -> None:
    services = compose()["services"]
    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    (address,) = jobs["evotic-exporter"]["static_configs"][0]["targets"]
    probe = jobs["evotic"]
    assert probe["metrics_path"] == "/probe"
    assert "static_configs" not in probe
    assert "params" not in probe  # the target parameter comes from each target
    assert probe["relabel_configs"] == [
        *PROBE_RELABELING,
        {"target_label": "__address__", "replacement": address},
    ]
    # The targets file sits beside the config in the container as in the repository, and
    # lists exactly the accounts of the file the demo's exporter is started with.
    (sd_config,) = probe["file_sd_configs"]
    (targets,) = sd_config["files"]
    assert in_repo(services["prometheus"], str(probe_targets_file())) == DEMO_TARGETS
    assert (PROMETHEUS_CONFIG.parent / targets).resolve() == DEMO_TARGETS
    exporter_service = services["exporter"]
    config = in_repo(exporter_service, config_file_argument(exporter_service["command"]))
    assert sorted(file_sd_targets(DEMO_TARGETS)) == sorted(account_names(config))
    assert len(set(file_sd_targets(DEMO_TARGETS))) == len(file_sd_targets(DEMO_TARGETS))


def test_amtool_accepts_the_alertmanager_config() -> None:
    result = run(tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_matches_the_stack() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = service_mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == "../grafana/provisioning"
    assert mounts["/var/lib/grafana/dashboards"] == "../grafana/dashboards"
    provisioning = ROOT / "grafana" / "provisioning"
    providers = [
        provider
        for path in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for provider in load_yaml(path).get("providers", [])
    ]
    datasources = [
        source
        for path in sorted((provisioning / "datasources").glob("*.y*ml"))
        for source in load_yaml(path).get("datasources", [])
    ]
    assert providers, "no dashboard provider in grafana/provisioning/dashboards"
    assert datasources, "no datasource in grafana/provisioning/datasources"
    for provider in providers:
        # The provider's directory in the container, traced back to the repository.
        path = PurePosixPath(provider["options"]["path"])
        target = next((t for t in mounts if path.is_relative_to(t)), None)
        assert target, f"{path} is not inside any of grafana's mounts"
        source = (DEPLOY / mounts[target] / path.relative_to(target)).resolve()
        assert list(source.glob("*.json")), f"provider path {path} ({source}) holds no dashboard"
    prometheus_port = next(iter(published(compose()["services"]["prometheus"])))
    assert any(
        source.get("url") == f"http://prometheus:{prometheus_port}" for source in datasources
    )


def test_live_override_swaps_demo_for_one_account_with_a_token_file(tmp_path: Path) -> None:
    live = load_yaml(COMPOSE_LIVE)
    assert set(live["services"]) == {"exporter", "prometheus"}
    base = compose()["services"]
    service = merged(base["exporter"], live["services"]["exporter"])
    command = service["command"]
    assert "--demo" not in command
    assert in_repo(service, config_file_argument(command)) == LIVE_ACCOUNTS
    assert (DEPLOY / f"{service['env_file']}.example").exists()
    # The file names the token file; EVOTIC_API_TOKEN_FILE beside it would stop the start.
    assert "environment" not in service
    (secret,) = service["secrets"]
    assert live["secrets"][secret]["file"].startswith("${TOKEN_FILE:?")

    # The exporter's own loader, given the command and exporter.env.example as the container
    # has them, with /run/secrets/ standing for a folder here.
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / secret).write_text("live-token\n", encoding="utf-8")
    config = tmp_path / LIVE_ACCOUNTS.name
    config.write_text(LIVE_ACCOUNTS.read_text(encoding="utf-8").replace("/run/secrets/",
                      f"{secrets}/"), encoding="utf-8")  # fmt: skip
    settings = env_file_settings(DEPLOY / "exporter.env.example")
    environ = {name: value for name, (value, active) in settings.items() if active}
    loaded = load([f"--config.file={config}"], environ)
    tokens = {name: account.settings.api_token_file for name, account in loaded.accounts.items()}
    assert tokens == dict.fromkeys(account_names(LIVE_ACCOUNTS), secrets / secret)
    # The account is the one an exporter without a configuration file serves, so the same
    # /probe?target= works both ways.
    assert list(loaded.accounts) == ["default"]
    assert list(load(["--api.token-file", str(secrets / secret)], {}).accounts) == ["default"]

    # Prometheus: the override's targets take the place of the demo's, with the same config.
    prometheus_service = merged(base["prometheus"], live["services"]["prometheus"])
    assert in_repo(prometheus_service, str(probe_targets_file())) == LIVE_TARGETS
    assert sorted(file_sd_targets(LIVE_TARGETS)) == sorted(loaded.accounts)
    assert len(prometheus_service["volumes"]) == len(base["prometheus"]["volumes"])


@pytest.mark.e2e
def test_compose_demo_as_its_prometheus_scrapes_it(tmp_path: Path) -> None:
    """The exporter started with the compose file's command, scraped by a real Prometheus with
    the scrape configurations of prometheus.yml, the exporter's address changed."""
    services = compose()["services"]
    exporter_service = services["exporter"]
    args = [in_repo_argument(exporter_service, arg) for arg in exporter_service["command"]]
    accounts = account_names(DEMO_ACCOUNTS)
    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    jobs = {name: jobs[name] for name in ("evotic-exporter", "evotic")}  # the others' targets
    (compose_address,) = jobs["evotic-exporter"]["static_configs"][0]["targets"]
    with exporter(tmp_path, *args) as running:
        address = running.url.removeprefix("http://")
        dumped = yaml.safe_dump(list(jobs.values()))
        scrape_configs = yaml.safe_load(dumped.replace(compose_address, address))
        # The targets file where the config expects it, as the compose mounts place it.
        folder = tmp_path / "prometheus"
        (sd_config,) = jobs["evotic"]["file_sd_configs"]
        (relative,) = sd_config["files"]
        targets = folder / relative
        targets.parent.mkdir(parents=True)
        shutil.copyfile(in_repo(services["prometheus"], str(probe_targets_file())), targets)
        with prometheus(folder, [], scrape_configs=scrape_configs) as prom:

            def every_account_scraped() -> bool:
                up = prom.query('up{job="evotic"} == 1')
                exporter_up = prom.query('evotic_up{job="evotic-exporter"}')
                return len(up) == len(accounts) and len(exporter_up) == len(accounts)

            wait_until(every_account_scraped, timeout=60, interval=0.5,
                       what=f"both jobs scraped; prometheus:\n{prom.output()}")  # fmt: skip

            up = prom.query('up{job="evotic"}')
            assert sorted(series["metric"]["account"] for series in up) == sorted(accounts)
            assert {series["metric"]["instance"] for series in up} == {address}
            health = prom.query('evotic_up{job="evotic-exporter"}')
            assert sorted(series["metric"]["account"] for series in health) == sorted(accounts)
            assert {series["value"][1] for series in health} == {"1"}
            # The servers come from /probe alone: /metrics has none to store twice.
            assert prom.query('evotic_server_info{job="evotic-exporter"}') == []

            fleets = {}
            for account in accounts:
                stored = prom.query(f'evotic_server_info{{job="evotic", account="{account}"}}')
                fleets[account] = {series["metric"]["uuid"] for series in stored}
                served = parse(httpx.get(f"{running.url}/probe", params={"target": account},
                                         timeout=10).text)  # fmt: skip
                assert fleets[account] == set(values(served, "evotic_server_info", "uuid"))
                assert fleets[account], account
            # Each account is a fleet of its own.
            assert len(set.union(*fleets.values())) == sum(map(len, fleets.values()))


def env_file_settings(path: Path) -> dict[str, tuple[str, bool]]:
    """``{variable: (value, active)}`` of an env file, commented-out examples included."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"(#?)(EVOTIC_[A-Z0-9_]+)=(.*)", line.strip())
        if match:
            found[match[2]] = (match[3], not match[1])
    return found


@pytest.mark.parametrize("path", [DEPLOY / "exporter.env.example", UNIT_ENV], ids=lambda p: p.name)
def test_env_files_hold_valid_settings_and_no_token(path: Path) -> None:
    settings = env_file_settings(path)
    assert settings
    # Each under its name by the naming rule, not an older alias.
    known = {option.variable for option in OPTIONS}
    assert set(settings) <= known, set(settings) - known
    # The token always arrives as a file from elsewhere (a secret, a credential).
    assert not {"EVOTIC_API_TOKEN", "EVOTIC_API_TOKEN_FILE", "EVOTIC_DEMO"} & set(settings)
    active = read_environment({name: value for name, (value, on) in settings.items() if on})
    Settings(demo=True, **active)


# --------------------------------------------------------------------------------- Kubernetes


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(K8S_BASE / "kustomization.yaml")
    return data


def k8s_objects() -> list[dict[str, Any]]:
    """The base as kustomize renders it: the resources, with the ``images:`` tags applied."""
    return copy.deepcopy(_k8s_objects())


@functools.cache
def _k8s_objects() -> list[dict[str, Any]]:
    objects = []
    for resource in kustomization()["resources"]:
        text = (K8S_BASE / resource).read_text(encoding="utf-8")
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    tags = {image["name"]: image["newTag"] for image in kustomization().get("images", [])}
    for obj in objects:
        for container in (
            obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        ):
            container["image"] = f"{container['image']}:{tags[container['image']]}"
    return objects


def k8s(kind: str) -> dict[str, Any]:
    (found,) = [obj for obj in k8s_objects() if obj["kind"] == kind]
    return found


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = k8s("Deployment")["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    (only_container,) = pod_spec()["containers"]
    assert not pod_spec().get("initContainers")
    result: dict[str, Any] = only_container
    return result


def secret_example() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(K8S / "secret.example.yaml")
    return data


def test_kustomization_renders_a_namespace_agnostic_base() -> None:
    data = kustomization()
    assert "namespace" not in data
    assert data["images"] == [{"name": "evotic-exporter", "newTag": __version__}]
    objects = k8s_objects()
    assert sorted(obj["kind"] for obj in objects) == [
        "ConfigMap",
        "Deployment",
        "PrometheusRule",
        "Service",
        "ServiceMonitor",
    ]
    assert all("namespace" not in obj["metadata"] for obj in objects)
    # The Secret example is applied by hand, with a real token, never by the kustomization.
    assert "secret.example.yaml" not in str(data["resources"])
    kubectl = shutil.which("kubectl")
    if kubectl:  # where kubectl exists, its kustomize must agree with the rendering above
        result = run(kubectl, "kustomize", str(K8S_BASE))
        assert result.returncode == 0, result.stderr
        rendered = sorted(yaml.safe_load_all(result.stdout), key=lambda o: o["kind"])
        assert rendered == sorted(objects, key=lambda o: o["kind"])


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_builtin_kinds_validate_against_the_kubernetes_schema(version: str) -> None:
    documents = [obj for obj in k8s_objects() if obj["apiVersion"] in ("v1", "apps/v1")]
    documents.append(secret_example())
    assert {d["kind"] for d in documents} == {"ConfigMap", "Deployment", "Service", "Secret"}
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)


def test_pod_meets_the_restricted_pod_security_standard() -> None:
    pod = pod_spec()
    pod_context = pod["securityContext"]
    assert pod_context["runAsNonRoot"] is True
    assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key)
    allowed_volumes = {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
    for volume in pod.get("volumes", []):
        assert set(volume) - {"name"} <= allowed_volumes, volume

    context = container()["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context.get("privileged") is not True
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert all("hostPort" not in port for port in container()["ports"])

    # The numeric user is the image's USER, so runAsNonRoot holds with or without it.
    uid, _, gid = only(dockerfile_stages()[1], "USER").args.partition(":")
    for ctx in (pod_context, context):
        assert (ctx["runAsUser"], ctx["runAsGroup"]) == (int(uid), int(gid))
    assert pod["automountServiceAccountToken"] is False


def pod_volume(mount_path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The container's volume mount at ``mount_path`` and the pod's volume it mounts."""
    (mount,) = [m for m in container()["volumeMounts"] if m["mountPath"] == mount_path]
    (volume,) = [v for v in pod_spec()["volumes"] if v["name"] == mount["name"]]
    return mount, volume


def k8s_config_file() -> tuple[PurePosixPath, str]:
    """Where the exporter's configuration file is in the pod, and its text from the ConfigMap."""
    path = PurePosixPath(config_file_argument(container()["args"]))
    _mount, volume = pod_volume(str(path.parent))
    config_map = k8s("ConfigMap")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert "items" not in volume["configMap"]  # each key is a file of its name
    text: str = config_map["data"][path.name]
    return path, text


def k8s_accounts() -> list[str]:
    return list(yaml.safe_load(k8s_config_file()[1])["accounts"])


def test_tokens_reach_the_pod_as_files_only(tmp_path: Path) -> None:
    env = {var["name"]: var for var in container()["env"]}
    for var in env.values():
        assert "secretKeyRef" not in var.get("valueFrom", {}), var
    assert not [source for source in container().get("envFrom", []) if "secretRef" in source]
    # The configuration file names each account's token file; neither variable may be set.
    assert not {"EVOTIC_API_TOKEN", "EVOTIC_API_TOKEN_FILE"} & set(env)

    path, text = k8s_config_file()
    config = yaml.safe_load(text)
    token_files = {PurePosixPath(entry["token_file"]) for entry in config["accounts"].values()}
    (tokens_dir,) = {token.parent for token in token_files}
    mount, volume = pod_volume(str(tokens_dir))
    example = secret_example()
    assert volume["secret"]["secretName"] == example["metadata"]["name"]
    # Every key is a file of its name: one per account, named as the account.
    assert "items" not in volume["secret"]
    assert {token.name for token in token_files} == set(example["stringData"])
    assert set(example["stringData"]) == set(config["accounts"])
    # Readable by the pod's group (fsGroup) and nobody else.
    assert volume["secret"]["defaultMode"] == 0o440
    assert pod_spec()["securityContext"]["fsGroup"] == container()["securityContext"]["runAsGroup"]
    # Neither mount may use subPath: it would never see an updated Secret or ConfigMap.
    for mounted in (mount, pod_volume(str(path.parent))[0]):
        assert mounted["readOnly"] is True
        assert "subPath" not in mounted

    # The exporter's own loader, given the container's args and env, with the pod's /etc/evotic
    # standing for a folder here that holds the Secret's keys as the volume does.
    pod = tmp_path / "pod"
    (pod / tokens_dir.relative_to("/")).mkdir(parents=True)
    for key in example["stringData"]:
        (pod / tokens_dir.relative_to("/") / key).write_text(f"token-{key}\n", encoding="utf-8")
    local = pod / path.relative_to("/")
    local.parent.mkdir(parents=True)
    local.write_text(text.replace(f"{tokens_dir}/", f"{pod / tokens_dir.relative_to('/')}/"),
                     encoding="utf-8")  # fmt: skip
    environ = {name: var["value"] for name, var in env.items()}
    loaded = load([arg.replace(str(path), str(local)) for arg in container()["args"]], environ)
    assert list(loaded.accounts) == list(config["accounts"])
    for name, account in loaded.accounts.items():
        assert account.settings.api_token_file == pod / tokens_dir.relative_to("/") / name


def test_deployment_probes_resources_and_replicas() -> None:
    deployment = k8s("Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert pod_spec()["enableServiceLinks"] is False
    ports = {port["name"]: port["containerPort"] for port in container()["ports"]}
    assert ports == {"metrics": DEFAULT_PORT}
    probes = {
        kind: container()[f"{kind}Probe"]["httpGet"]
        for kind in ("startup", "liveness", "readiness")
    }
    assert probes["startup"] == {"path": "/healthz", "port": "metrics"}
    assert probes["liveness"] == {"path": "/healthz", "port": "metrics"}
    assert probes["readiness"] == {"path": "/readyz", "port": "metrics"}
    resources = container()["resources"]
    for kind in ("requests", "limits"):
        assert set(resources[kind]) == {"cpu", "memory"}
    assert container()["image"] == f"evotic-exporter:{__version__}"


def test_service_monitor_selects_the_service_port() -> None:
    service, monitor = k8s("Service"), k8s("ServiceMonitor")
    labels = k8s("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port == {
        "name": "metrics",
        "port": DEFAULT_PORT,
        "targetPort": "metrics",
        "protocol": "TCP",
    }

    # CRDs are beyond kubernetes-validate: check the fields the operator's schema defines.
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    endpoint, *_probes = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"]
    assert endpoint["path"] == "/metrics"
    for each in monitor["spec"]["endpoints"]:
        assert set(each) <= ENDPOINT_FIELDS, each
    # The compose stack's job name, so rules and dashboards select the same job in both.
    scrape_jobs = [job["job_name"] for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]]
    assert service["metadata"]["name"] in scrape_jobs


# Fields of a ServiceMonitor endpoint and of a RelabelConfig in the operator's CRD
# (monitoring.coreos.com_servicemonitors.yaml), of those this base may use.
ENDPOINT_FIELDS = {
    "port",
    "path",
    "params",
    "interval",
    "scrapeTimeout",
    "scheme",
    "tlsConfig",
    "basicAuth",
    "honorLabels",
    "relabelings",
}
RELABEL_FIELDS = {
    "action",
    "modulus",
    "regex",
    "replacement",
    "separator",
    "sourceLabels",
    "targetLabel",
}


def test_service_monitor_probes_each_account_of_the_config_map() -> None:
    first, *probes = k8s("ServiceMonitor")["spec"]["endpoints"]
    assert [probe["params"] for probe in probes] == [{"target": [name]} for name in k8s_accounts()]
    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    for probe in probes:
        assert probe["port"] == first["port"]
        assert probe["path"] == jobs["evotic"]["metrics_path"]
        assert (probe["interval"], probe["scrapeTimeout"]) == (
            first["interval"],
            first["scrapeTimeout"],
        )
        # The CRD: params map a name to a list of strings; relabelings are RelabelConfigs.
        assert all(isinstance(v, list) and all(isinstance(s, str) for s in v)
                   for v in probe["params"].values())  # fmt: skip
        for relabeling in probe["relabelings"]:
            assert set(relabeling) <= RELABEL_FIELDS, relabeling
            for label in relabeling.get("sourceLabels", []):
                assert re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", label), label
        # The labels of the compose stack's `evotic` job: `account` from the target parameter,
        # as prometheus.yml's relabel_configs set it, and the job's name, which the operator
        # would otherwise take from the Service (its relabelings come after the operator's).
        (account_rule,) = [rule for rule in jobs["evotic"]["relabel_configs"]
                           if rule["target_label"] == "account"]  # fmt: skip
        assert probe["relabelings"] == [
            {"sourceLabels": account_rule["source_labels"], "targetLabel": "account"},
            {"targetLabel": "job", "replacement": "evotic"},
        ]


def generator() -> Any:
    spec = importlib.util.spec_from_file_location("k8s_generate", K8S / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prometheus_rule_is_generated_from_the_rule_files() -> None:
    generate = generator()
    committed = (K8S_BASE / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert committed == generate.render(generate.load_groups(RULES_DIR)), (
        "deploy/kubernetes/base/prometheusrule.yaml is out of date: "
        "run python deploy/kubernetes/generate.py"
    )
    # The same groups, whatever the formatting: nothing lost or changed by the re-dump.
    groups = [
        group
        for path in sorted(RULES_DIR.glob("*.rules.yml"))
        for group in load_yaml(path)["groups"]
    ]
    rule = k8s("PrometheusRule")
    assert rule["spec"]["groups"] == groups

    # The CRD's schema: the group and rule fields the operator accepts.
    for group in groups:
        assert set(group) <= {
            "name",
            "interval",
            "rules",
            "limit",
            "query_offset",
            "labels",
            "partial_response_strategy",
        }, group["name"]
        for entry in group["rules"]:
            assert set(entry) <= {
                "alert",
                "record",
                "expr",
                "for",
                "keep_firing_for",
                "labels",
                "annotations",
            }, entry
            assert ("alert" in entry) != ("record" in entry), entry
            assert "expr" in entry


def test_prometheus_rule_content_passes_promtool(tmp_path: Path) -> None:
    rules = tmp_path / "from-prometheusrule.yml"
    rules.write_text(yaml.safe_dump(k8s("PrometheusRule")["spec"]), encoding="utf-8")
    result = run(tool("promtool"), "check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr


def test_generator_writes_checks_and_refuses_duplicates(tmp_path: Path) -> None:
    generate = generator()
    rules, output = tmp_path / "rules", tmp_path / "out.yaml"
    rules.mkdir()
    (rules / "a.rules.yml").write_text(
        "groups:\n  - name: a\n    rules:\n      - record: x:y\n        expr: |\n"
        "          sum(up)\n          / 2\n",
        encoding="utf-8",
    )
    argv = ["--rules-dir", str(rules), "--output", str(output)]
    assert generate.main([*argv, "--check"]) == 1
    assert generate.main(argv) == 0
    assert generate.main([*argv, "--check"]) == 0
    text = output.read_text(encoding="utf-8")
    assert "expr: |\n" in text  # multi-line expressions stay block scalars
    assert yaml.safe_load(text)["spec"]["groups"][0]["rules"][0]["expr"] == "sum(up)\n/ 2\n"
    (rules / "b.rules.yml").write_text("groups:\n  - name: a\n    rules: []\n", encoding="utf-8")
    assert generate.main(argv) == 2
    assert generate.main(["--rules-dir", str(tmp_path / "none"), "--output", str(output)]) == 2


# --------------------------------------------------------------------------------- systemd


def unit_entries(*paths: Path) -> dict[str, dict[str, list[str]]]:
    """``{section: {key: [values]}}`` of a unit and its drop-ins (``UNIT`` alone by default).

    Keys may repeat in a unit, and an empty value resets.
    """
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    pending = ""
    lines = [line for path in paths or (UNIT,) for line in path.read_text("utf-8").splitlines()]
    for raw in lines:
        line = pending + raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_unit_is_hardened_and_reads_the_token_as_a_credential() -> None:
    service = unit_entries()["Service"]

    def value(key: str) -> str:
        (single,) = service[key]
        return single

    expected = {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "MemoryDenyWriteExecute": "yes",
        "Restart": "on-failure",
        "RestartPreventExitStatus": "2",
        "KillSignal": "SIGTERM",
        "TimeoutStopSec": "10",
        # `systemctl reload` is the exporter's SIGHUP.
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "EnvironmentFile": "-/etc/default/evotic-exporter",
        "LoadCredential": "token:/etc/evotic-exporter/token",
    }
    assert {key: value(key) for key in expected} == expected
    assert "@system-service" in service["SystemCallFilter"]
    # Not ProcSubset=pid: it hides /proc/stat, and the process metrics need the boot time.
    assert "ProcSubset" not in service
    assert value("ExecStart").endswith("/bin/evotic-exporter")

    environment = dict(e.split("=", 1) for e in service["Environment"])
    credential = value("LoadCredential").split(":", 1)[0]
    assert environment["EVOTIC_API_TOKEN_FILE"] == f"%d/{credential}"
    assert "EVOTIC_API_TOKEN" not in environment
    assert not re.search(r"--api\.token[ =]", value("ExecStart"))


@pytest.mark.e2e
def test_systemd_analyze_verifies_the_unit_and_rates_it_safe(image: Image, tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    # verify insists that ExecStart exists: point it at the venv built from the Dockerfile.
    (exec_start,) = unit_entries()["Service"]["ExecStart"]
    unit = tmp_path / UNIT.name
    unit.write_text(
        UNIT.read_text(encoding="utf-8").replace(
            f"ExecStart={exec_start}", f"ExecStart={image.venv}/bin/evotic-exporter"
        ),
        encoding="utf-8",
    )
    # The drop-ins beside it, where the unit search path finds them (a unit given by path
    # alone is read without its drop-ins).
    drop_ins = tmp_path / DROP_IN.parent.name
    drop_ins.mkdir()
    for drop_in in (DROP_IN, ACCOUNTS_DROP_IN):
        shutil.copy(drop_in, drop_ins)
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"}  # the trailing ':' keeps the rest
    result = run(analyze, "verify", str(unit), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert UNIT.name not in result.stderr, result.stderr  # also names the drop-in's path
    # Exposure is 0 (locked down) to 10 (unprotected); the threshold is in tenths.
    result = run(analyze, "security", "--offline=true", "--threshold=15", str(unit), cwd=tmp_path,
                 env=env)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr

    # The drop-in was read: a mistake in it is reported.
    (drop_ins / DROP_IN.name).write_text(
        DROP_IN.read_text(encoding="utf-8").replace("\nLoadCredential=", "\nLoadCredentials=", 1),
        encoding="utf-8",
    )
    result = run(analyze, "verify", str(unit), cwd=tmp_path, env=env)
    assert f"{DROP_IN.name}:" in result.stderr, result.stderr


def unit_credentials(*paths: Path) -> dict[str, str]:
    """``{credential ID: source file}`` of the ``LoadCredential=`` lines (``UNIT``'s by default)."""
    return dict(entry.split(":", 1) for entry in unit_entries(*paths)["Service"]["LoadCredential"])


def secrets_folder() -> PurePosixPath:
    """The folder, readable by root only, whose files the unit loads as credentials."""
    return PurePosixPath(unit_credentials()["token"]).parent


def test_drop_in_loads_the_web_config_and_its_files_as_credentials() -> None:
    sections = unit_entries(DROP_IN)
    assert set(sections) == {"Service"}
    credentials = unit_credentials(DROP_IN)
    assert {PurePosixPath(source).parent for source in credentials.values()} == {secrets_folder()}
    assert not set(credentials) & set(unit_credentials())
    environment = dict(e.split("=", 1) for e in sections["Service"]["Environment"])
    assert environment == {"EVOTIC_WEB_CONFIG_FILE": "%d/web-config.yml"}
    assert set(sections["Service"]) == {"LoadCredential", "Environment"}

    # The web configuration that README.md writes names the other two by their credential IDs,
    # relative to its own folder, which is the credentials directory.
    (heredoc,) = re.findall(r"<<EOF\n(.*?)\nEOF\n", readme_recipes()["systemd-tls"], re.S)
    tls = yaml.safe_load(heredoc.replace("$password_hash", "hash"))["tls_server_config"]
    assert {"web-config.yml", tls["cert_file"], tls["key_file"]} == set(credentials)


def credentials_directory() -> PurePosixPath:
    """The unit's credentials directory as a file other than the unit may name it."""
    return PurePosixPath("/run/credentials") / UNIT.name


def accounts_drop_in_example() -> dict[str, Any]:
    """The configuration file that the accounts drop-in's comment shows."""
    lines = ACCOUNTS_DROP_IN.read_text(encoding="utf-8").splitlines()
    start = lines.index("#   accounts:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#   "):
            break
        block.append(line.removeprefix("#   "))
    example: dict[str, Any] = yaml.safe_load("\n".join(block))
    return example


def test_accounts_drop_in_loads_each_token_and_drops_the_single_one() -> None:
    sections = unit_entries(ACCOUNTS_DROP_IN)
    assert set(sections) == {"Service"}
    assert set(sections["Service"]) == {"LoadCredential", "UnsetEnvironment"}
    credentials = unit_credentials(ACCOUNTS_DROP_IN)
    assert {PurePosixPath(source).parent for source in credentials.values()} == {secrets_folder()}
    assert not set(credentials) & (set(unit_credentials()) | set(unit_credentials(DROP_IN)))
    # What it unsets is what the unit sets: the variable that names the single token.
    unit_environment = dict(e.split("=", 1) for e in unit_entries()["Service"]["Environment"])
    (unset,) = sections["Service"]["UnsetEnvironment"]
    assert unset in unit_environment
    assert unset == next(o.variable for o in OPTIONS if o.field == "api_token_file")

    # The example in its comment names exactly the credentials the unit and the drop-in load.
    loaded = {**unit_credentials(), **credentials}
    tokens = [PurePosixPath(entry["token_file"])
              for entry in accounts_drop_in_example()["accounts"].values()]  # fmt: skip
    assert {token.parent for token in tokens} == {credentials_directory()}
    assert sorted(token.name for token in tokens) == sorted(loaded)


def unit_environment(*drop_ins: Path, env_file: dict[str, str]) -> dict[str, str]:
    """The exporter's environment as systemd builds it from the unit and ``drop_ins``:
    ``Environment=``, then the environment file's variables over them, then
    ``UnsetEnvironment=`` last; ``%d`` stays as it is."""
    service = unit_entries(UNIT, *drop_ins)["Service"]
    env = dict(assignment.split("=", 1) for assignment in service["Environment"])
    env.update(env_file)
    for names in service.get("UnsetEnvironment", []):
        for name in names.split():
            env.pop(name, None)
    return env


def test_env_file_line_and_accounts_drop_in_start_several_accounts(tmp_path: Path) -> None:
    settings = env_file_settings(UNIT_ENV)
    config_file, active = settings["EVOTIC_CONFIG_FILE"]
    assert not active  # a commented example
    active_settings = {name: value for name, (value, on) in settings.items() if on}

    # The credentials directory and the configuration file, here instead of in /run and /etc.
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name in {**unit_credentials(), **unit_credentials(ACCOUNTS_DROP_IN)}:
        (credentials / name).write_text(f"token-{name}\n", encoding="utf-8")
    example = yaml.safe_dump(accounts_drop_in_example())
    config = tmp_path / PurePosixPath(config_file).name
    config.write_text(example.replace(f"{credentials_directory()}/", f"{credentials}/"),
                      encoding="utf-8")  # fmt: skip
    env_file = {**active_settings, "EVOTIC_CONFIG_FILE": str(config)}

    def environ(*drop_ins: Path) -> dict[str, str]:
        env = unit_environment(*drop_ins, env_file=env_file)
        return {key: value.replace("%d", str(credentials)) for key, value in env.items()}

    loaded = load([], environ(ACCOUNTS_DROP_IN))
    assert list(loaded.accounts) == list(accounts_drop_in_example()["accounts"])
    for account in loaded.accounts.values():
        assert account.settings.api_token_file is not None
        assert account.settings.api_token_file.parent == credentials
    # Without the drop-in, the unit's single token clashes with the file.
    with pytest.raises(SettingsError, match=r"cannot be used with --config\.file"):
        load([], environ())


def test_readme_recipes_create_every_file_the_unit_loads() -> None:
    recipes = readme_recipes()
    assert set(recipes) == {"quick-start-token", "pip", "systemd", "systemd-tls"}
    for block in recipes.values():
        for source in re.findall(r"\bdeploy/\S+", block):
            assert (ROOT / source).is_file(), source
    systemd = recipes["systemd"] + recipes["systemd-tls"]
    assert f"install -d -m 0700 {secrets_folder()}\n" in systemd
    created = set(re.findall(r"install -m 0600 \S+ (\S+)", systemd))
    assert created == set(unit_credentials(UNIT, DROP_IN).values())


def test_unit_env_file_names_no_file_the_dynamic_user_cannot_read() -> None:
    for name, (value, _active) in env_file_settings(UNIT_ENV).items():
        assert not PurePosixPath(value).is_relative_to(secrets_folder()), f"{name}={value}"


# ------------------------------------------------------------------- README.md's recipes, run

RECIPE_TOKEN = "recipe-canary-token-5d1c0e"
RECIPE_USER = "prometheus"  # the user README.md's web configuration names
RECIPE_PASSWORD = "recipe-scrape-Password-81f0"
RECIPE_SHELL = """\
set -euo pipefail
umask 022
sudo() { "$@"; }
systemctl() { printf '%s\\n' "$*" >>"$SYSTEMCTL_LOG"; }
"""


def readme_recipes() -> dict[str, str]:
    """README.md's shell blocks marked ``<!-- recipe: NAME -->``, by name."""
    text = README.read_text(encoding="utf-8")
    found = re.findall(r"<!-- recipe: ([\w-]+) -->\n```sh\n(.*?)```\n", text, re.S)
    recipes = dict(found)
    assert len(recipes) == len(found), "two recipes in README.md share a name"
    return recipes


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@dataclass
class Recipe:
    """README.md's recipes run by bash, as pasted into a shell, on a machine in a folder.

    What differs from a real machine, and why:

    - ``/etc/`` and ``/opt/`` in a block stand for ``root/etc/`` and ``root/opt/``, which hold
      what a Debian system has there (``etc/systemd/system``, ``etc/default``), so nothing
      outside the test's folder changes; ``HOME`` is ``root/home``;
    - ``sudo`` is a shell function that runs its command as the test's user, and
      ``systemctl`` one that only writes its arguments to ``systemctl.log``: systemd is not the
      init here. ``unit_process`` starts the exporter as systemd would start the installed
      unit;
    - a block runs in a copy of the checkout (pip builds in the folder it installs from), in a
      session of its own without a terminal: what a user would type (the token, a password)
      comes on stdin, where getpass reads it when there is no terminal;
    - ``set -euo pipefail`` stops a block at its first error, which a user would see, and the
      umask is 022, a common default, so a file left readable by others shows as such.
    """

    root: Path

    @property
    def checkout(self) -> Path:
        return self.root / "checkout"

    @property
    def systemctl_log(self) -> Path:
        return self.root / "systemctl.log"

    @classmethod
    def make(cls, root: Path) -> Recipe:
        recipe = cls(root)
        ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build",
                                        "dist", ".*_cache", ".coverage")  # fmt: skip
        shutil.copytree(ROOT, recipe.checkout, ignore=ignore)
        for folder in ("etc/systemd/system", "etc/default", "opt", "home"):
            (root / folder).mkdir(parents=True)
        return recipe

    def path(self, text: str) -> str:
        """``text`` with the machine's ``/etc/`` and ``/opt/`` moved into ``root``."""
        return re.sub(r"(?<![\w.~/-])/(etc|opt)/", lambda m: f"{self.root}/{m[1]}/", text)

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def start(self, name: str, typed: str = "", **env: str) -> subprocess.Popen[bytes]:
        """Start the block ``name`` with ``typed`` on its stdin and ``env`` in its environment."""
        stdin = self.root / f"{name}.stdin"
        stdin.write_text(typed, encoding="utf-8")
        own_bin = str(Path(sys.executable).parent)  # a user's shell has not activated it
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("EVOTIC_") and key not in ("VIRTUAL_ENV", "PYTHONPATH")
        }
        environment["PATH"] = os.pathsep.join(
            p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p != own_bin
        )
        environment.update(HOME=str(self.root / "home"), SYSTEMCTL_LOG=str(self.systemctl_log))
        environment.update(env)
        script = RECIPE_SHELL + self.path(readme_recipes()[name])
        with stdin.open("rb") as source, self.log(name).open("wb") as output:
            return subprocess.Popen(
                ["bash", "-c", script],
                cwd=self.checkout,
                stdin=source,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,
            )

    def run(self, name: str, typed: str = "") -> None:
        """Run the block ``name`` to its end, which must be a success."""
        returncode = self.start(name, typed).wait(timeout=120)
        assert returncode == 0, f"recipe {name}:\n{self.log(name).read_text(encoding='utf-8')}"

    def interrupt(self, name: str, process: subprocess.Popen[bytes]) -> None:
        """Stop a block that ended in a running exporter as Ctrl-C would: cleanly, exit code 0."""
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        returncode = process.wait(timeout=15)
        assert returncode == 0, f"recipe {name}:\n{self.log(name).read_text(encoding='utf-8')}"


@contextlib.contextmanager
def unit_process(recipe: Recipe, *, api_url: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """The exporter, started as systemd starts the unit and drop-ins that ``recipe`` installed.

    systemd copies each ``LoadCredential=`` file into a folder only the service can read, named
    by ``$CREDENTIALS_DIRECTORY`` and ``%d``; it sets ``Environment=``, then the
    ``EnvironmentFile=``'s variables over them, and runs ``ExecStart=``. Two settings are
    changed last: the API is the simulator at ``api_url``, and the exporter listens on
    127.0.0.1:``port`` instead of the port the settings file gives, which may be taken.
    """
    system = Path(recipe.path("/etc/systemd/system/"))
    drop_ins = sorted((system / f"{UNIT.name}.d").glob("*.conf"))
    service = unit_entries(system / UNIT.name, *drop_ins)["Service"]
    credentials = recipe.root / "run" / "credentials" / UNIT.name
    credentials.mkdir(parents=True)
    credentials.chmod(0o700)
    for name, source in unit_credentials(system / UNIT.name, *drop_ins).items():
        shutil.copyfile(recipe.path(source), credentials / name)
        (credentials / name).chmod(0o400)

    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
           "CREDENTIALS_DIRECTORY": str(credentials)}  # fmt: skip
    for assignment in service.get("Environment", []):
        key, _, value = assignment.partition("=")
        env[key] = value.replace("%d", str(credentials))
    for file in service.get("EnvironmentFile", []):
        settings = env_file_settings(Path(recipe.path(file.removeprefix("-"))))
        env.update({key: value for key, (value, active) in settings.items() if active})
    listen = [key for key in env if key.endswith("LISTEN_ADDRESS")] or ["EVOTIC_LISTEN_ADDRESS"]
    env.update(dict.fromkeys(listen, f"127.0.0.1:{port}"), EVOTIC_API_URL=api_url)

    (exec_start,) = service["ExecStart"]
    with recipe.log("unit").open("wb") as output:
        process = subprocess.Popen(
            shlex.split(recipe.path(exec_start)),
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd="/",
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def serving(process: subprocess.Popen[bytes], log: Path, url: str, **kwargs: Any) -> bool:
    """Whether ``/readyz`` answers 200; fails at once if ``process`` has exited."""
    assert process.poll() is None, f"exited:\n{log.read_text(encoding='utf-8', errors='replace')}"
    return httpx.get(f"{url}/readyz", timeout=5, **kwargs).status_code == 200


def simulated_server_ids(sim_url: str) -> set[str]:
    state = httpx.get(f"{sim_url}/_simulator/state", timeout=10).json()
    return {str(server["id"]) for server in state["servers"]}


@pytest.mark.e2e
def test_readme_quick_start_against_a_real_account(tmp_path: Path) -> None:
    recipe = Recipe.make(tmp_path / "machine")
    # What the quick start's first block made: a venv of this checkout, as the tests run in.
    (recipe.checkout / ".venv").symlink_to(sys.prefix)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with simulator(tmp_path, "--servers", "5", token=RECIPE_TOKEN) as sim:
        process = recipe.start("quick-start-token", f"{RECIPE_TOKEN}\n",
                               EVOTIC_API_URL=f"{sim.url}/api/v1",
                               EVOTIC_LISTEN_ADDRESS=f"127.0.0.1:{port}")  # fmt: skip
        try:
            log = recipe.log("quick-start-token")
            wait_until(lambda: serving(process, log, url), what="the quick start's exporter")
            samples = parse(httpx.get(f"{url}/metrics", timeout=10).text)
            assert one(samples, "evotic_up") == 1
            assert set(values(samples, "evotic_server_info")) == simulated_server_ids(sim.url)
        finally:
            recipe.interrupt("quick-start-token", process)

    # The check and the exporter are given the same file.
    (token_file,) = set(
        re.findall(r"--api\.token-file (\S+)", readme_recipes()["quick-start-token"])
    )
    token = Path(token_file.replace("~", str(recipe.root / "home"), 1))
    assert token.read_text(encoding="utf-8") == f"{RECIPE_TOKEN}\n"
    assert file_mode(token) == 0o600
    assert file_mode(token.parent) == 0o700
    output = log.read_text(encoding="utf-8")
    assert RECIPE_TOKEN not in output
    # The check ran first, and found the account fine (or the block would have stopped there).
    assert re.search(r"^default +yes +yes ", output, re.M), output


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_readme_systemd_recipe_serves_tls_and_basic_auth_from_credentials(tmp_path: Path) -> None:
    recipe = Recipe.make(tmp_path / "machine")
    pki = make_pki(tmp_path)
    # The certificate and key the recipe installs, under the names it uses.
    shutil.copyfile(pki.server_cert, recipe.checkout / "server.crt")
    shutil.copyfile(pki.server_key, recipe.checkout / "server.key")

    # With pip: a venv in /opt from the checkout, which then serves its demo.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = recipe.start("pip", EVOTIC_LISTEN_ADDRESS=f"127.0.0.1:{port}")
    try:
        wait_until(lambda: serving(process, recipe.log("pip"), url), timeout=600, interval=0.5,
                   what="the venv in /opt to be installed and serve its demo")  # fmt: skip
        assert one(parse(httpx.get(f"{url}/metrics", timeout=10).text), "evotic_up") == 1
    finally:
        recipe.interrupt("pip", process)

    recipe.run("systemd", f"{RECIPE_TOKEN}\n")
    recipe.run("systemd-tls", f"{RECIPE_PASSWORD}\n")
    assert recipe.systemctl_log.read_text(encoding="utf-8").splitlines() == [
        "daemon-reload",
        "enable --now evotic-exporter",
        "daemon-reload",
        "restart evotic-exporter",
    ]
    secrets = Path(recipe.path(f"{secrets_folder()}/"))
    assert file_mode(secrets) == 0o700
    assert {path.name: file_mode(path) for path in secrets.iterdir()} == dict.fromkeys(
        ["token", "tls.crt", "tls.key", "web-config.yml"], 0o600
    )
    assert RECIPE_PASSWORD not in (secrets / "web-config.yml").read_text(encoding="utf-8")

    port = free_port()
    url = f"https://127.0.0.1:{port}"
    trust = pki.client_context()
    with (
        simulator(tmp_path, "--servers", "5", token=RECIPE_TOKEN) as sim,
        unit_process(recipe, api_url=f"{sim.url}/api/v1", port=port) as unit,
    ):
        wait_until(lambda: serving(unit, recipe.log("unit"), url, verify=trust),
                   what="the unit's exporter to be ready over HTTPS")  # fmt: skip
        assert httpx.get(f"{url}/metrics", verify=trust, timeout=10).status_code == 401
        response = httpx.get(
            f"{url}/metrics", verify=trust, timeout=10, auth=(RECIPE_USER, RECIPE_PASSWORD)
        )
        assert response.status_code == 200
        samples = parse(response.text)
        assert one(samples, "evotic_up") == 1
        assert set(values(samples, "evotic_server_info")) == simulated_server_ids(sim.url)
        unit.send_signal(signal.SIGTERM)  # the unit's KillSignal, within its TimeoutStopSec
        assert unit.wait(timeout=10) == 0
    output = recipe.log("unit").read_text(encoding="utf-8")
    assert RECIPE_TOKEN not in output
    assert RECIPE_PASSWORD not in output
