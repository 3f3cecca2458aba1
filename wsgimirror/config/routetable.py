"""The routing table ``wsgimirror check`` prints: what a person needs to trust a config."""

from __future__ import annotations

from .model import Cluster, Config, Route


def routing_table(config: Config, source: str) -> str:
    lines = [f"{source}: valid", "", "Routes, in the order they are tried:"]
    if not config.routes:
        lines.append("  (none: nothing is mirrored)")
    for number, route in enumerate(config.routes, 1):
        lines.extend(_route_lines(number, route, config))
    unused = sorted(set(config.clusters) - {c for r in config.routes for c in r.mirror_clusters})
    if unused:
        lines += ["", f"Clusters not mirrored to: {', '.join(unused)}"]
    m = config.mirror
    lines += [
        "",
        f"Mirror: MaxInFlight {m.max_in_flight}, MemoryBodyBytes {_bytes(m.memory_body_bytes)}, "
        f"MaxBodyBytes {_bytes(m.max_body_bytes)}, ConnectTimeout {m.connect_timeout:g} s, "
        f"Timeout {m.timeout:g} s, Executor {m.executor}",
    ]
    return "\n".join(lines)


def _route_lines(number: int, route: Route, config: Config) -> list[str]:
    lines = [
        f"  {number}. {route.id} (Order {route.order})",
        f"       hosts    {', '.join(route.hosts) or '*'}",
        f"       paths    {', '.join(route.paths) or '*'}",
        f"       methods  {', '.join(route.methods) or 'any'}",
    ]
    if not route.mirror_clusters:
        lines.append("       mirror   none (matches, mirrors nothing)")
    for cluster_id in route.mirror_clusters:
        lines.extend(_cluster_lines(config.clusters[cluster_id]))
    return lines


def _cluster_lines(cluster: Cluster) -> list[str]:
    policy = cluster.policy
    if policy == "Hash":
        policy += f" by {cluster.hash_by} {cluster.hash_key!r}" if cluster.hash_by else " by client address"
    count = len(cluster.destinations)
    lines = [f"       mirror   {cluster.id}: {policy}, {count} destination{'s' if count != 1 else ''}"]
    for dest in cluster.destinations:
        named = f"{dest.name} = " if dest.name != dest.address else ""
        lines.append(f"                  - {named}{dest.address}")
    return lines


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"
