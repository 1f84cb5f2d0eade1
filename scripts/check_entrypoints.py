#!/usr/bin/env python3
"""Checks that every shoal command in the deploy files is one the built binaries accept.

Usage: check_entrypoints.py BIN_DIR COMPOSE_JSON K8S_YAML... DOCKERFILE

For each shoal container (compose services, Kubernetes Deployments, the Dockerfile's
ENTRYPOINT + CMD) it runs `BIN_DIR/<binary> <args...> --help`: clap checks every flag and value
before it reaches --help, so an unknown flag or a bad value fails. Each SHOAL_* variable given
to a container must be one the binary reads (its --help lists `[env: NAME=]`), except the
SHOAL_TARGET_<NAME>[_FILE] DSN variables. A ConfigMap shared through envFrom must only hold
variables that at least one of its consumers reads.
"""

import json
import re
import shlex
import subprocess
import sys

import yaml

BINARIES = {"shoal-coordinator", "shoal-worker", "shoal"}
failures = []


def help_text(bin_dir, argv, where):
    """Runs the binary with argv + --help; returns its help text or records a failure."""
    binary, args = argv[0].rsplit("/", 1)[-1], argv[1:]
    if binary not in BINARIES:
        failures.append(f"{where}: {binary!r} is not a shoal binary")
        return ""
    run = subprocess.run(
        [f"{bin_dir}/{binary}", *args, "--help"], capture_output=True, text=True
    )
    if run.returncode != 0:
        failures.append(f"{where}: `{shlex.join(argv)}` refused: {run.stderr.strip()}")
        return ""
    print(f"ok   {where}: {shlex.join(argv)}")
    return run.stdout


def known(help_output, name):
    return name.startswith("SHOAL_TARGET_") or f"[env: {name}=" in help_output


def check_env(help_output, names, where):
    for name in names:
        if name.startswith("SHOAL_") and help_output and not known(help_output, name):
            failures.append(f"{where}: {name} is not read by this binary")


def shell_invocations(script):
    """The shoal commands inside a `sh -c` script (split on && and ;)."""
    for part in re.split(r"&&|;|\|\|", script):
        if "$(" in part:  # id=$(shoal submit …): drop the substitution's brackets
            part = part.replace("$(", " ", 1).rstrip().removesuffix(")")
        words = shlex.split(part)
        while words and "=" in words[0] and not words[0].startswith("-"):
            words = words[1:]  # id=$(…: an assignment prefix
        if words and words[0] in BINARIES:
            yield [w if not w.startswith("$") else "placeholder" for w in words]


def check_compose(bin_dir, path):
    with open(path) as handle:
        config = json.load(handle)
    for name, service in sorted(config["services"].items()):
        if not str(service.get("image", "")).startswith("shoal:"):
            continue
        entrypoint = service.get("entrypoint") or ["shoal-coordinator"]
        command = service.get("command") or []
        environment = service.get("environment") or {}
        where = f"compose service {name}"
        if entrypoint[0] in ("/bin/sh", "sh"):
            script = " ".join(command)
            found = list(shell_invocations(script))
            if not found:
                failures.append(f"{where}: no shoal command in its script")
            for argv in found:
                check_env(help_text(bin_dir, argv, where), environment, where)
        else:
            output = help_text(bin_dir, [*entrypoint, *command], where)
            check_env(output, environment, where)


def check_kubernetes(bin_dir, paths):
    documents = []
    for path in paths:
        with open(path) as handle:
            documents += [doc for doc in yaml.safe_load_all(handle) if doc]
    config_maps = {
        doc["metadata"]["name"]: doc.get("data", {})
        for doc in documents
        if doc["kind"] == "ConfigMap"
    }
    shared = {}  # ConfigMap name -> help texts of its consumers
    for doc in documents:
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            where = f"{doc['metadata'].get('namespace', '')}/{doc['metadata']['name']}/{container['name']}"
            output = help_text(
                bin_dir, [*container["command"], *container.get("args", [])], where
            )
            check_env(output, [env["name"] for env in container.get("env", [])], where)
            for source in container.get("envFrom", []):
                name = source.get("configMapRef", {}).get("name")
                if name is not None:
                    if name not in config_maps:
                        failures.append(f"{where}: ConfigMap {name} is not in the manifests")
                    shared.setdefault(name, []).append(output)
    for name, outputs in shared.items():
        for key in config_maps.get(name, {}):
            if key.startswith("SHOAL_") and not any(known(out, key) for out in outputs):
                failures.append(f"ConfigMap {name}: {key} is read by none of its consumers")


def check_dockerfile(bin_dir, path):
    with open(path) as handle:
        text = handle.read()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    command = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    help_text(bin_dir, [*entrypoint, *command], "Dockerfile ENTRYPOINT + CMD")


def main():
    bin_dir, compose, *k8s, dockerfile = sys.argv[1:]
    check_compose(bin_dir, compose)
    check_kubernetes(bin_dir, k8s)
    check_dockerfile(bin_dir, dockerfile)
    for failure in failures:
        print(f"FAIL {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
