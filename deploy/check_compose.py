"""Holds deploy/compose.yaml to its network design (test.sh runs this).

Only the proxy and the core-api instances may share a network with the proxy: the
integrations service hands out people's bureau records for a CPF, so nothing on the proxy's
network but the core API may reach it, nor Redis or Elasticsearch. Every service names its
networks (none falls into the default one), the data network is internal, only the services
that need the data are on it (Prometheus scrapes the instances over a network of its own),
and only the proxy publishes a port to the world (Grafana is published on the host's
loopback only).

Usage: python check_compose.py [path/to/compose.yaml]   (needs ruamel.yaml)
"""

import sys
from pathlib import Path

from ruamel.yaml import YAML

PROXY = "proxy"
MAY_SHARE_WITH_PROXY = {"proxy", "core-api-1", "core-api-2"}
DATA_NETWORK_HOLDERS = ("redis", "elasticsearch")
MAY_BE_ON_DATA_NETWORK = {
    "core-api-1", "core-api-2", "integrations-1", "integrations-2",
    "redis", "elasticsearch",
}


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
        if name != PROXY:
            for port in service.get("ports") or []:
                if not str(port).startswith("127.0.0.1:"):
                    found.append(
                        f"service `{name}` publishes {port!r}; only `{PROXY}` may publish "
                        "beyond the host's loopback"
                    )
    edge = networks_of(services[PROXY])
    for name, service in services.items():
        shared = edge & networks_of(service)
        if shared and name not in MAY_SHARE_WITH_PROXY:
            found.append(f"service `{name}` shares {sorted(shared)} with the proxy")
    declared = compose.get("networks") or {}
    data_networks = set()
    for holder in DATA_NETWORK_HOLDERS:
        for net in networks_of(services[holder]):
            data_networks.add(net)
            if not (declared.get(net) or {}).get("internal"):
                found.append(f"`{holder}` is on `{net}`, which is not internal")
    for name, service in services.items():
        on = networks_of(service) & data_networks
        if on and name not in MAY_BE_ON_DATA_NETWORK:
            found.append(f"service `{name}` is on the data network {sorted(on)}")
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
