"""Vendor one CustomResourceDefinition's schema for the offline checks of deploy/kubernetes (tests/deploy/schemas/).

Reads a file of CRDs (YAML, several documents) on stdin, keeps the one of the given kind with only the given version,
drops every `description` (validation never reads them, and they are most of the bytes), and prints it under a
header naming where it came from. For example, from a clone of istio/istio:

    git show 1.30.3:manifests/charts/base/files/crd-all.gen.yaml | python -m tests.deploy.vendor_schemas \\
        --kind AuthorizationPolicy --version v1 --repository istio/istio --tag 1.30.3 \\
        --path manifests/charts/base/files/crd-all.gen.yaml --commit "$(git rev-parse 1.30.3^{commit})" \\
        --date "$(git log -1 --format=%cs 1.30.3)" > tests/deploy/schemas/authorizationpolicy.security.istio.io-v1.yaml
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml


def trimmed(crd: dict[str, Any], version: str) -> dict[str, Any]:
    """The CRD with only `version`, its schema without descriptions; KeyError when it has no such version."""
    versions = [entry for entry in crd["spec"]["versions"] if entry["name"] == version]
    if not versions:
        raise KeyError(f"{crd['spec']['names']['kind']} has no version {version}")
    return {
        "apiVersion": crd["apiVersion"],
        "kind": crd["kind"],
        "metadata": {"name": crd["metadata"]["name"]},
        "spec": {
            "group": crd["spec"]["group"],
            "names": {"kind": crd["spec"]["names"]["kind"]},
            "scope": crd["spec"]["scope"],
            "versions": [
                {
                    "name": version,
                    "served": versions[0]["served"],
                    "schema": {"openAPIV3Schema": _without_descriptions(versions[0]["schema"]["openAPIV3Schema"])},
                }
            ],
        },
    }


def _without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        # A property may be named `description` (a field of the resource): only the keyword is dropped.
        return {
            key: (
                {name: _without_descriptions(value) for name, value in item.items()}
                if key == "properties"
                else _without_descriptions(item)
            )
            for key, item in node.items()
            if key != "description"
        }
    if isinstance(node, list):
        return [_without_descriptions(item) for item in node]
    return node


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("kind", "version", "repository", "tag", "path", "commit", "date"):
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args(argv)
    crds = [doc for doc in yaml.safe_load_all(sys.stdin) if doc and doc.get("kind") == "CustomResourceDefinition"]
    matching = [crd for crd in crds if crd["spec"]["names"]["kind"] == args.kind]
    if len(matching) != 1:
        print(f"expected one CRD of kind {args.kind}, found {len(matching)}", file=sys.stderr)
        return 2
    crd = trimmed(matching[0], args.version)
    sys.stdout.write(
        f"# {args.kind} {crd['spec']['group']}/{args.version}: the CustomResourceDefinition's OpenAPI v3 schema,\n"
        f"# vendored for tests/deploy (python -m tests.deploy.vendor_schemas; descriptions and other versions dropped).\n"
        f"# Source: https://github.com/{args.repository}, {args.path}\n"
        f"# Release: {args.tag} (commit {args.commit}, {args.date})\n"
    )
    yaml.safe_dump(crd, sys.stdout, sort_keys=False, width=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
