"""The deployment files: Dockerfile, compose stack, Kubernetes manifests and systemd unit.

Nothing here needs a Docker engine, a cluster or systemd as init. What the image would run is
built the way the Dockerfile builds it (wheel, venv, install) and started from that venv; the
rest is checked by the tools that own each format (hadolint, the compose-spec schema, promtool,
amtool, kubernetes-validate, systemd-analyze) plus the cross-file facts no single tool sees:
ports, paths, names and the token's route from a file into the process.
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
from exporter.config import DEFAULT_PORT, Settings

from .processes import ROOT, free_port, wait_until

DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
COMPOSE_LIVE = DEPLOY / "docker-compose.live.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULES_DIR = DEPLOY / "prometheus" / "rules"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
K8S = DEPLOY / "kubernetes"
K8S_BASE = K8S / "base"
UNIT = DEPLOY / "systemd" / "evotic-exporter.service"
UNIT_ENV = DEPLOY / "systemd" / "evotic-exporter.env"

# An older release the manifests should still suit, and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())


def tool(name: str) -> str:
    """A command-line tool from this venv or PATH; a missing one fails, it does not skip."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed: tests/run.sh installs it"
    return found


def run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


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
    assert exporter["command"] == ["--demo"]
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
    for path in RULES_DIR.glob("*.rules.yml"):
        assert f"Checking {path}" in output or f"Checking {path.relative_to(ROOT)}" in output


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


def test_live_override_swaps_demo_for_a_token_file() -> None:
    live = load_yaml(COMPOSE_LIVE)
    assert set(live["services"]) == {"exporter"}
    exporter = live["services"]["exporter"]
    assert exporter["command"] == []  # replaces ["--demo"], leaving the entrypoint alone
    assert (DEPLOY / f"{exporter['env_file']}.example").exists()
    (secret,) = exporter["secrets"]
    assert exporter["environment"] == {"EVOTIC_API_TOKEN_FILE": f"/run/secrets/{secret}"}
    assert live["secrets"][secret]["file"].startswith("${TOKEN_FILE:?")


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
    known = {f"EVOTIC_{field.upper()}": field for field in Settings.model_fields}
    assert set(settings) <= set(known), set(settings) - set(known)
    # The token always arrives as a file from elsewhere (a secret, a credential).
    assert not {"EVOTIC_API_TOKEN", "EVOTIC_API_TOKEN_FILE", "EVOTIC_DEMO"} & set(settings)
    active = {known[name]: value for name, (value, on) in settings.items() if on}
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
    assert {d["kind"] for d in documents} == {"Deployment", "Service", "Secret"}
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


def test_token_reaches_the_pod_as_a_file_only() -> None:
    env = {var["name"]: var for var in container()["env"]}
    for var in env.values():
        assert "secretKeyRef" not in var.get("valueFrom", {}), var
    assert not [source for source in container().get("envFrom", []) if "secretRef" in source]
    assert "EVOTIC_API_TOKEN" not in env

    token_path = Path(env["EVOTIC_API_TOKEN_FILE"]["value"])
    (mount,) = [m for m in container()["volumeMounts"] if Path(m["mountPath"]) == token_path.parent]
    assert mount["readOnly"] is True
    assert "subPath" not in mount  # a subPath mount would never see an updated Secret
    (volume,) = [v for v in pod_spec()["volumes"] if v["name"] == mount["name"]]
    example = secret_example()
    assert volume["secret"]["secretName"] == example["metadata"]["name"]
    assert volume["secret"]["items"] == [{"key": "token", "path": token_path.name}]
    assert set(example["stringData"]) == {"token"}
    # Readable by the pod's group (fsGroup) and nobody else.
    assert volume["secret"]["defaultMode"] == 0o440
    assert pod_spec()["securityContext"]["fsGroup"] == container()["securityContext"]["runAsGroup"]


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
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"]
    assert endpoint["path"] == "/metrics"
    assert set(endpoint) <= {
        "port",
        "path",
        "interval",
        "scrapeTimeout",
        "scheme",
        "tlsConfig",
        "basicAuth",
        "honorLabels",
    }
    # The compose stack's job name, so rules and dashboards select the same job in both.
    scrape_jobs = [job["job_name"] for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]]
    assert service["metadata"]["name"] in scrape_jobs


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


def unit_entries() -> dict[str, dict[str, list[str]]]:
    """``{section: {key: [values]}}``; keys may repeat in a unit, and an empty value resets."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    pending = ""
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
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
    result = run(analyze, "verify", str(unit), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert UNIT.name not in result.stderr, result.stderr
    # Exposure is 0 (locked down) to 10 (unprotected); the threshold is in tenths.
    result = run(analyze, "security", "--offline=true", "--threshold=15", str(unit), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
