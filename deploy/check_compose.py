"""Holds deploy/compose.yaml to its network design (test.sh runs this).

Only the proxy and the core-api instances may share a network with the proxy: the
integrations service hands out people's bureau records for a CPF, so nothing on the proxy's
network but the core API may reach it, nor Redis or Elasticsearch. Every service names its
networks (none falls into the default one), the data network is internal, and only the proxy
publishes a port.

Usage: python check_compose.py [path/to/compose.yaml]   (needs ruamel.yaml)
"""

import sys
from pathlib import Path

from ruamel.yaml import YAML

PROXY = "proxy"
MAY_SHARE_WITH_PROXY = {"proxy", "core-api-1", "core-api-2"}
DATA_NETWORK_HOLDERS = ("redis", "elasticsearch")


def networks_of(service: dict) -> set:
    nets = service.get("networks")
    if nets is None:
        return {"default"}
    return set(nets)


def problems(compose: dict) -> list:
    services = compose["services"]
    found = []
    for name, service in services.items():
        if "networks" not in service:
            found.append(f"service `{name}` names no networks (it would join `default`)")
        if "ports" in service and name != PROXY:
            found.append(f"service `{name}` publishes a port; only `{PROXY}` may")
    edge = networks_of(services[PROXY])
    for name, service in services.items():
        shared = edge & networks_of(service)
        if shared and name not in MAY_SHARE_WITH_PROXY:
            found.append(f"service `{name}` shares {sorted(shared)} with the proxy")
    declared = compose.get("networks") or {}
    for holder in DATA_NETWORK_HOLDERS:
        for net in networks_of(services[holder]):
            if not (declared.get(net) or {}).get("internal"):
                found.append(f"`{holder}` is on `{net}`, which is not internal")
    return found


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("compose.yaml"))
    compose = YAML(typ="safe").load(path.read_text())
    found = problems(compose)
    for p in found:
        print(f"{path}: {p}", file=sys.stderr)
    if not found:
        print(f"{path}: networks as designed")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
