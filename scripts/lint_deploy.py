"""`make lint-deploy`: validate the Dockerfile and deploy/ without a container engine or cluster.

Nothing under deploy/ can run on a development machine or in CI, so this checks it instead,
offline, with tools installed from uv.lock (deploy/README.md, "What `make lint` checks"):

- the Dockerfile with hadolint, the shell scripts with shellcheck;
- deploy/compose/compose.yaml against the Compose Specification schema (check-jsonschema's
  vendored copy), then its wiring: every process of every service, hardened, waiting for its
  migration and topics; secrets only from `.env`, the same names as the example and generator;
- deploy/k8s: each overlay built with kustomize (kubectl's, which also rejects unknown fields
  in kustomization files), every resource validated strictly against the Kubernetes schemas
  of the oldest and newest version we support (kubernetes-validate) or, for Strimzi
  KafkaTopics, against `KAFKA_TOPIC_SCHEMA`; then every Deployment and Job hardened, probed
  and sized, and one Deployment per process;
- the topic lists (compose, Kubernetes) against the dev stack's, the one source of truth
  (`consentry.devstack.services.SERVICES`), and the Prometheus and Grafana files.

Exit status 1 lists every problem found.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from consentry.devstack.services import SERVICES

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose"
K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "prod")
# The oldest and the newest Kubernetes minor version the manifests must be valid for.
K8S_VERSIONS = ("1.31", "1.37")
APP_UID = 10001  # the Dockerfile's user

# Strimzi's KafkaTopic (kafka.strimzi.io/v1), as far as we use it: unknown fields refused.
KAFKA_TOPIC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "kafka.strimzi.io/v1"},
        "kind": {"const": "KafkaTopic"},
        "metadata": {
            "type": "object",
            "required": ["name", "labels"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
                "labels": {"type": "object", "required": ["strimzi.io/cluster"]},
            },
        },
        "spec": {
            "type": "object",
            "required": ["topicName", "partitions", "replicas"],
            "additionalProperties": False,
            "properties": {
                "topicName": {"type": "string", "pattern": r"^[a-zA-Z0-9._-]{1,249}$"},
                "partitions": {"type": "integer", "minimum": 1},
                "replicas": {"type": "integer", "minimum": 3, "maximum": 32767},
                "config": {
                    "type": "object",
                    "required": ["min.insync.replicas"],
                    "properties": {"min.insync.replicas": {"const": 2}},
                },
            },
        },
    },
}

Problems = list[str]
# kubernetes-validate reads and parses its (large) schema files again for every resource;
# they never change while we run, so read each once (this halves the whole check's CPU time).
kubernetes_validate.utils.schema_contents = functools.cache(
    kubernetes_validate.utils.schema_contents
)
YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, when PyYAML has it


def tool(name: str) -> str:
    """The path of a command-line tool: the virtual environment's, else one on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"lint-deploy: {name} is not installed (run `make install`)")
    return found


def run(problems: Problems, label: str, *argv: str) -> str:
    """Run a tool; a non-zero exit is a problem (with its output), stdout is returned."""
    # argv: our own tools from the virtual environment, with paths of files in this repository
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=ROOT)  # noqa: S603
    if done.returncode != 0:
        problems.append(f"{label}:\n{(done.stdout + done.stderr).strip()}")
    return done.stdout


def processes() -> Iterator[tuple[str, str]]:
    """(service, process) for every long-running process of the dev stack's services."""
    for service in SERVICES:
        for process in service.processes:
            yield service.name, process.argv[-1]


def expected_topics() -> set[str]:
    """Every topic the services need (the dev stack creates the same ones)."""
    return {topic for service in SERVICES for topic in service.topics}


def compare(problems: Problems, what: str, found: Iterable[str], wanted: set[str]) -> None:
    """Report the difference between two sets of names."""
    have = set(found)
    if missing := sorted(wanted - have):
        problems.append(f"{what}: missing {', '.join(missing)}")
    if extra := sorted(have - wanted):
        problems.append(f"{what}: not in the dev stack's services: {', '.join(extra)}")


# ---- Dockerfile and shell scripts ------------------------------------------------------------


def check_scripts(problems: Problems) -> None:
    """hadolint on the Dockerfile, shellcheck on every shell script under deploy/."""
    run(
        problems,
        "hadolint Dockerfile",
        tool("hadolint"),
        "--no-color",
        "--failure-threshold",
        "style",
        "Dockerfile",
    )
    # hadolint cannot see through `FROM ${PYTHON_IMAGE}`: the base image defaults must be tagged
    dockerfile = (ROOT / "Dockerfile").read_text()
    for arg, image in re.findall(r"^ARG (\w+_IMAGE)=(\S+)$", dockerfile, flags=re.MULTILINE):
        if ":" not in image or image.endswith(":latest"):
            problems.append(f"Dockerfile: ARG {arg}={image} has no version tag")
    targets = re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, flags=re.MULTILINE)
    for service in SERVICES:
        if service.name not in targets:
            problems.append(f"Dockerfile: no final stage (target) {service.name!r}")
    scripts = sorted(str(path.relative_to(ROOT)) for path in DEPLOY.rglob("*.sh"))
    run(problems, "shellcheck", tool("shellcheck"), *scripts)


# ---- deploy/compose --------------------------------------------------------------------------


def check_compose(problems: Problems) -> None:
    """The compose file's schema, then what the schema cannot see."""
    path = COMPOSE / "compose.yaml"
    run(
        problems,
        "compose.yaml against the Compose Specification",
        tool("check-jsonschema"),
        "--builtin-schema",
        "vendor.compose-spec",
        str(path),
    )
    compose = yaml.safe_load(path.read_text())
    services: dict[str, Any] = compose["services"]
    check_compose_processes(problems, services)
    check_compose_references(problems, compose)
    check_compose_secrets(problems, path.read_text())
    script = (COMPOSE / "kafka" / "create-topics.sh").read_text()
    created = re.findall(r"^create (\S+) ", script, flags=re.MULTILINE)
    compare(problems, "deploy/compose/kafka/create-topics.sh topics", created, expected_topics())


def check_compose_processes(problems: Problems, services: dict[str, Any]) -> None:
    """One container per process and one migrate per service, each from its service's image."""
    wanted = {(f"{service}-{process}", service, process) for service, process in processes()}
    wanted |= {(f"{service.name}-migrate", service.name, "migrate") for service in SERVICES}
    for name, service, command in sorted(wanted):
        spec = services.get(name)
        if spec is None:
            problems.append(f"compose.yaml: no service {name!r} (`{service} {command}`)")
            continue
        if spec.get("command") != [command]:
            problems.append(
                f"compose.yaml {name}: command is {spec.get('command')}, not [{command!r}]"
            )
        if spec.get("build", {}).get("target") != service:
            problems.append(
                f"compose.yaml {name}: not built from the Dockerfile target {service!r}"
            )
        hardened = (
            spec.get("read_only") is True
            and spec.get("cap_drop") == ["ALL"]
            and "no-new-privileges:true" in spec.get("security_opt", [])
            and "/tmp" in spec.get("tmpfs", [])  # noqa: S108 (the container's, a tmpfs)
        )
        if not hardened:
            problems.append(
                f"compose.yaml {name}: needs read_only, a /tmp tmpfs, cap_drop ALL and "
                "no-new-privileges"
            )
        waits = set(spec.get("depends_on", {}))
        needed = {"postgres"} if command == "migrate" else {f"{service}-migrate", "kafka-init"}
        if not needed <= waits:
            problems.append(f"compose.yaml {name}: does not wait for {', '.join(sorted(needed))}")


def check_compose_references(problems: Problems, compose: dict[str, Any]) -> None:
    """depends_on names services, volumes are declared, bind-mounted files exist."""
    services: dict[str, Any] = compose["services"]
    volumes = set(compose.get("volumes") or {})
    for name, spec in services.items():
        for dependency in spec.get("depends_on", {}):
            if dependency not in services:
                problems.append(f"compose.yaml {name}: depends on unknown service {dependency!r}")
        for mount in spec.get("volumes", []):
            source = str(mount).split(":", 1)[0]
            if source.startswith("."):
                if not (COMPOSE / source).exists():
                    problems.append(f"compose.yaml {name}: {source} does not exist")
            elif source not in volumes:
                problems.append(f"compose.yaml {name}: volume {source!r} is not declared")


def check_compose_secrets(problems: Problems, text: str) -> None:
    """Required variables (`${NAME:?…}`) are the example's and the generator's, no more."""
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    example = (COMPOSE / "secrets.example.env").read_text()
    documented = set(re.findall(r"^([A-Z0-9_]+)=", example, flags=re.MULTILINE))
    generator = (COMPOSE / "gen-secrets.sh").read_text()
    generated = set(re.findall(r"^([A-Z0-9_]+)=\$\(", generator, flags=re.MULTILINE))
    for label, names in (("secrets.example.env", documented), ("gen-secrets.sh", generated)):
        if names != required:
            problems.append(
                f"deploy/compose/{label} differs from compose.yaml's required variables: "
                f"{sorted(names ^ required)}"
            )


def check_observability(problems: Problems) -> None:
    """Prometheus scrapes compose services; Grafana's dashboards use the provisioned source."""
    services = set(yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"])
    prometheus = yaml.safe_load((COMPOSE / "prometheus" / "prometheus.yml").read_text())
    for job in prometheus["scrape_configs"]:
        for group in job["static_configs"]:
            for target in group["targets"]:
                host = target.rsplit(":", 1)[0]
                if host not in services | {"localhost"}:
                    problems.append(f"prometheus.yml job {job['job_name']}: unknown host {host}")
    provisioning = COMPOSE / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
    uids = {source["uid"] for source in yaml.safe_load(provisioning.read_text())["datasources"]}
    for path in sorted((COMPOSE / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                if target["datasource"]["uid"] not in uids:
                    problems.append(f"{path.name} panel {panel['title']!r}: unknown datasource")
                if not target.get("expr"):
                    problems.append(
                        f"{path.name} panel {panel['title']!r}: a target without a query"
                    )


# ---- deploy/k8s ------------------------------------------------------------------------------


def build(problems: Problems, directory: Path) -> list[dict[str, Any]]:
    """`kustomize build` (kubectl's) of one kustomization: its resources."""
    label = f"kustomize build {directory.relative_to(ROOT)}"
    rendered = run(problems, label, tool("kubectl"), "kustomize", str(directory))
    return [doc for doc in yaml.load_all(rendered, Loader=YamlLoader) if doc]


def check_schemas(problems: Problems, where: str, resources: list[dict[str, Any]]) -> None:
    """Every resource valid (unknown fields refused) for each Kubernetes version we support."""
    for resource in resources:
        name = f"{where}: {resource.get('kind')}/{resource.get('metadata', {}).get('name')}"
        if resource.get("kind") == "KafkaTopic":
            for error in jsonschema.Draft202012Validator(KAFKA_TOPIC_SCHEMA).iter_errors(resource):
                problems.append(f"{name}: {error.json_path}: {error.message}")
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(part) for part in error.path)
                problems.append(f"{name} (Kubernetes {version}): {path}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                problems.append(f"{name}: {error.message}")


def check_pod(problems: Problems, name: str, pod: dict[str, Any], *, released: bool) -> None:
    """Non-root, read-only root filesystem, no capabilities, seccomp, requests and limits."""
    security = pod.get("securityContext", {})
    if not (
        security.get("runAsNonRoot") is True
        and security.get("runAsUser") == APP_UID
        and security.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        and pod.get("automountServiceAccountToken") is False
    ):
        problems.append(
            f"{name}: the pod needs runAsNonRoot as {APP_UID}, RuntimeDefault seccomp and no "
            "service-account token"
        )
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        context = container.get("securityContext", {})
        if not (
            context.get("readOnlyRootFilesystem") is True
            and context.get("allowPrivilegeEscalation") is False
            and context.get("capabilities", {}).get("drop") == ["ALL"]
        ):
            problems.append(
                f"{name}/{container['name']}: needs readOnlyRootFilesystem, no privilege "
                "escalation, capabilities drop [ALL]"
            )
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(resources.get(kind, {})):
                problems.append(f"{name}/{container['name']}: no cpu and memory {kind}")
        image = str(container.get("image", ""))
        if released and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
            problems.append(f"{name}/{container['name']}: image {image!r} has no released tag")


def check_api_probes(problems: Problems, name: str, container: dict[str, Any]) -> None:
    """An API container is live on /healthz and ready on /readyz (consentry.httpapi.server)."""
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        if container.get(probe, {}).get("httpGet", {}).get("path") != path:
            problems.append(f"{name}: {probe} is not an HTTP GET of {path}")


def check_workloads(problems: Problems, where: str, resources: list[dict[str, Any]]) -> None:
    """Hardening of every workload, and one Deployment per process, Job per service."""
    released = where != "base"
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for resource in resources:
        by_kind.setdefault(resource["kind"], {})[resource["metadata"]["name"]] = resource
    for kind in ("Deployment", "Job"):
        for name, workload in by_kind.get(kind, {}).items():
            check_pod(
                problems,
                f"{where}: {kind}/{name}",
                workload["spec"]["template"]["spec"],
                released=released,
            )
    deployments = by_kind.get("Deployment", {})
    for service, process in processes():
        name = f"consentry-{service}-{process}"
        if name not in deployments:
            problems.append(f"{where}: no Deployment {name}")
            continue
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        if container.get("args") != [process]:
            problems.append(f"{where}: Deployment/{name} args are not [{process!r}]")
        if process == "api":
            check_api_probes(problems, f"{where}: Deployment/{name}", container)
            if f"consentry-{service}" not in by_kind.get("Service", {}):
                problems.append(f"{where}: no Service consentry-{service}")
    for job in (f"consentry-{entry.name}-migrate" for entry in SERVICES):
        if job not in by_kind.get("Job", {}):
            problems.append(f"{where}: no Job {job}")
    if released:
        topics = [topic["spec"]["topicName"] for topic in by_kind.get("KafkaTopic", {}).values()]
        compare(problems, f"{where}: KafkaTopics", topics, expected_topics())


def check_k8s(problems: Problems) -> None:
    """Build the base and each overlay; validate and check what they render."""
    for where, directory in [("base", K8S / "base")] + [
        (overlay, K8S / "overlays" / overlay) for overlay in OVERLAYS
    ]:
        resources = build(problems, directory)
        if not resources:
            continue
        check_schemas(problems, where, resources)
        check_workloads(problems, where, resources)


def main() -> int:
    """Run every check; print the problems; 0 when there are none."""
    problems: Problems = []
    check_scripts(problems)
    check_compose(problems)
    check_observability(problems)
    check_k8s(problems)
    for problem in problems:
        print(f"lint-deploy: {problem}", file=sys.stderr)
    if problems:
        print(f"lint-deploy: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    overlays = ", ".join(OVERLAYS)
    print(
        "lint-deploy: Dockerfile, shell scripts, deploy/compose and deploy/k8s (base, "
        f"{overlays}; Kubernetes {' and '.join(K8S_VERSIONS)}) are valid"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
