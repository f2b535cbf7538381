"""Per-node state on real nodes: the dynamic schedule's counter (one per node, shared by
that node's ranks only) and the placement of map items.

Prints, on rank 0: ``counters: <node>=<ranks sharing it>:<final value>, ...`` and
``items: <node>=<count>, ...`` of a dynamic map of 2000 items (each rank records its
node), and the map's result against the serial one."""

import socket

import parcomp
from parcomp.mapreduce.counter import NodeCounter


def main() -> None:
    comm = parcomp.default_comm()
    with NodeCounter(comm) as counter:
        for _ in range(100):
            counter.fetch_add(1)
        comm.Barrier()
        final = counter.fetch_add(0)
        seen = comm.gather((socket.gethostname(), counter.node_comm.Get_size(), final))
    host = socket.gethostname()
    out = parcomp.map(lambda i: (i * i) % 7919, range(2000), schedule="dynamic")
    where = comm.gather(host)
    if comm.rank == 0:
        nodes = {h: (n, v) for h, n, v in seen}
        print("counters: " + ", ".join(f"{h}={n}:{v}" for h, (n, v) in sorted(nodes.items())))
        print(f"ranks: {','.join(where)}")
        print("map agrees:", out == [(i * i) % 7919 for i in range(2000)])


if __name__ == "__main__":
    main()
