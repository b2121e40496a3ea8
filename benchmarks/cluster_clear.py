"""clear() on a three-primary Redis Cluster against its slowest primary alone."""

from __future__ import annotations

import sys
from pathlib import Path

# Runnable as ``python benchmarks/cluster_clear.py`` from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import os
import statistics
import time
from typing import Any

import redis.cluster

from benchmarks import common

PAYLOAD = b'{"cart":[1017,2203,87],"theme":"dark","_auth_user_id":"48213"}'


def fill(client: redis.cluster.RedisCluster, prefix: str, size: int) -> None:
    """``size`` sessions under ids, spread over the slots as the store's are."""
    pipe = client.pipeline(transaction=False)
    for index in range(size):
        pipe.set(f"{prefix}{{#{index:043x}}}", PAYLOAD, px=3_600_000)
        if len(pipe) == 10_000:
            pipe.execute()
    pipe.execute()


def clear_node(node: Any, prefix: str, scan_count: int) -> int:
    """What ``clear()`` does on one primary of several, on that primary only."""
    pattern = common.scan_pattern(prefix)
    batches = common.cleared_on(node, pattern, scan_count, 0)
    return sum(deleted for deleted, _ in batches)


def servers_cpu(client: redis.cluster.RedisCluster) -> float:
    """Seconds of CPU every node of the cluster (replicas too) used so far."""
    total = 0.0
    for node in client.get_nodes():
        info = client.get_redis_connection(node).info("cpu")
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--size", type=int, default=300_000, help="default 300000")
    args = parser.parse_args()
    with common.RedisClusterServers() as cluster:
        prefix = f"{common.NAMESPACE}s:"
        common.configure(cluster.url, session_redis={"CLUSTER": True})
        client = redis.cluster.RedisCluster.from_url(cluster.url)
        store = common.store()
        scan_count = common.RedisLayer().scan_count
        primaries = [
            client.get_redis_connection(node) for node in client.get_primaries()
        ]
        print(
            f"clear() of {args.size:,} sessions on 3 primaries, "
            f"{args.rounds} rounds (+1 warm-up)",
            flush=True,
        )
        alone: list[float] = []
        together: list[float] = []
        client_cpu: list[float] = []
        floor: list[float] = []  # the CPU clear() needed, spread over the cores
        cores = os.cpu_count() or 1
        for round_number in range(-1, args.rounds):
            fill(client, prefix, args.size)
            seconds = []
            for node in primaries:
                started = time.perf_counter()
                clear_node(node, prefix, scan_count)
                seconds.append(time.perf_counter() - started)
            fill(client, prefix, args.size)
            started, cpu = time.perf_counter(), time.process_time()
            servers = servers_cpu(client)
            deleted = store.clear()
            elapsed = time.perf_counter() - started
            used = time.process_time() - cpu
            servers = servers_cpu(client) - servers
            if deleted != args.size:
                raise SystemExit(f"clear() deleted {deleted:,} of {args.size:,}.")
            if round_number >= 0:
                alone.append(max(seconds))
                together.append(elapsed)
                client_cpu.append(used)
                floor.append((servers + used) / cores)
        ratios = [mine / slowest for mine, slowest in zip(together, alone, strict=True)]
        floors = [least / slowest for least, slowest in zip(floor, alone, strict=True)]
        rows = [
            ["", "median s", "x slowest alone", "range"],
            ["slowest primary alone", f"{statistics.median(alone):.2f}", "1.00x", ""],
            [
                "clear(), all at once",
                f"{statistics.median(together):.2f}",
                f"{statistics.median(ratios):.2f}x",
                f"{min(ratios):.2f}-{max(ratios):.2f}",
            ],
            [
                f"its CPU / {cores} cores",
                f"{statistics.median(floor):.2f}",
                f"{statistics.median(floors):.2f}x",
                f"{min(floors):.2f}-{max(floors):.2f}",
            ],
        ]
        print(f"\n{common.table(rows)}")
        # What is left to the servers: on fewer cores than nodes (three
        # primaries, each replicating to its replica), they take turns. The
        # last row is the least time the CPU clear() used (every node's and
        # this process's) allows on this machine's cores.
        print(
            f"\nCPU of this process during clear(): "
            f"{statistics.median(client_cpu):.2f} s (median)."
        )
        client.close()


if __name__ == "__main__":
    main()
