/* mpicount: count each rank's MPI calls and bytes through the PMPI profiling interface.
 *
 * Build and use (bench/scale_model.py does both):
 *   .venv/bin/mpicc -O2 -shared -fPIC bench/mpicount.c -o /tmp/libmpicount.so
 *   MPICOUNT_DIR=/tmp/counts LD_PRELOAD=/tmp/libmpicount.so mpiexec -n 4 python job.py
 *
 * At MPI_Finalize each rank writes MPICOUNT_DIR/rank-<world rank>.txt: one line per section
 * and kind, "<section> <name> <calls> <bytes> <peers>" (sections: MPI_Pcontrol, below;
 * peers: the sum over the calls of the communicator's size minus one).  Point-to-point: messages started by this rank and the bytes
 * they carry (persistent sends counted at each MPI_Start/Startall).  Collectives: calls
 * and the bytes this rank contributes (its send buffer; Alltoallv: the sum of its send
 * counts).  What MPI does inside a collective is not visible here: the model in
 * bench/scale_model.py prices each collective with its textbook algorithm.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    K_SEND, K_ALLREDUCE, K_REDUCE, K_BCAST, K_BARRIER, K_ALLGATHER, K_ALLGATHERV,
    K_GATHER, K_GATHERV, K_SCATTER, K_SCATTERV, K_ALLTOALL, K_ALLTOALLV, K_ALLTOALLW,
    K_SPLIT, K_DUP, K_WIN, K_RMA, K_IALLREDUCE, K_IBARRIER, K_NEIGHBOR, K_COUNT
};
static const char *NAMES[K_COUNT] = {
    "p2p_send", "allreduce", "reduce", "bcast", "barrier", "allgather", "allgatherv",
    "gather", "gatherv", "scatter", "scatterv", "alltoall", "alltoallv", "alltoallw",
    "comm_split", "comm_dup", "win_create", "rma", "iallreduce", "ibarrier",
    "neighbor_msgs"};
#define SECTIONS 64
/* MPI_Pcontrol(level) (mpi4py allows levels 0-2): 2 starts the next section (1, 2, ...)
 * and counts what follows in it, 0 stops counting, 1 resumes the current section.  A
 * program that never calls it is counted whole in section 0. */
static int section = 0, sectioned = 0, counting = 0, next_section = 0;
static long long calls[SECTIONS][K_COUNT], bytes[SECTIONS][K_COUNT], peers[SECTIONS][K_COUNT];
static void add_peers(int k, MPI_Comm m) {
    int p = 1;
    if (sectioned && !counting) return;
    PMPI_Comm_size(m, &p);
    peers[section][k] += p - 1;
}

static long long size_of(MPI_Datatype t, long long count) {
    int s = 0;
    if (t == MPI_DATATYPE_NULL) return 0;
    PMPI_Type_size(t, &s);
    return (long long)s * count;
}
static void add(int k, long long b) {
    if (sectioned && !counting) return;
    calls[section][k]++;
    bytes[section][k] += b;
}
int MPI_Pcontrol(const int level, ...) {
    sectioned = 1;
    if (level == 2 && next_section + 1 < SECTIONS) section = ++next_section;
    counting = level > 0 && section > 0;
    return MPI_SUCCESS;
}

/* persistent sends: request -> bytes */
#define SLOTS 65536
static MPI_Request preq[SLOTS];
static long long pbytes[SLOTS];
static int npreq;
static long long persistent_bytes(MPI_Request r) {
    for (int i = 0; i < npreq; i++) if (preq[i] == r) return pbytes[i];
    return -1;
}

int MPI_Send(const void *b, int c, MPI_Datatype t, int d, int g, MPI_Comm m) {
    if (d != MPI_PROC_NULL) add(K_SEND, size_of(t, c));
    return PMPI_Send(b, c, t, d, g, m);
}
int MPI_Isend(const void *b, int c, MPI_Datatype t, int d, int g, MPI_Comm m, MPI_Request *r) {
    if (d != MPI_PROC_NULL) add(K_SEND, size_of(t, c));
    return PMPI_Isend(b, c, t, d, g, m, r);
}
int MPI_Ssend(const void *b, int c, MPI_Datatype t, int d, int g, MPI_Comm m) {
    if (d != MPI_PROC_NULL) add(K_SEND, size_of(t, c));
    return PMPI_Ssend(b, c, t, d, g, m);
}
int MPI_Issend(const void *b, int c, MPI_Datatype t, int d, int g, MPI_Comm m, MPI_Request *r) {
    if (d != MPI_PROC_NULL) add(K_SEND, size_of(t, c));
    return PMPI_Issend(b, c, t, d, g, m, r);
}
int MPI_Sendrecv(const void *sb, int sc, MPI_Datatype st, int d, int sg, void *rb, int rc,
                 MPI_Datatype rt, int s, int rg, MPI_Comm m, MPI_Status *status) {
    if (d != MPI_PROC_NULL) add(K_SEND, size_of(st, sc));
    return PMPI_Sendrecv(sb, sc, st, d, sg, rb, rc, rt, s, rg, m, status);
}
int MPI_Send_init(const void *b, int c, MPI_Datatype t, int d, int g, MPI_Comm m,
                  MPI_Request *r) {
    int err = PMPI_Send_init(b, c, t, d, g, m, r);
    if (d != MPI_PROC_NULL && npreq < SLOTS) {
        preq[npreq] = *r;
        pbytes[npreq++] = size_of(t, c);
    }
    return err;
}
int MPI_Start(MPI_Request *r) {
    long long b = persistent_bytes(*r);
    if (b >= 0) add(K_SEND, b);
    return PMPI_Start(r);
}
int MPI_Startall(int n, MPI_Request r[]) {
    for (int i = 0; i < n; i++) {
        long long b = persistent_bytes(r[i]);
        if (b >= 0) add(K_SEND, b);
    }
    return PMPI_Startall(n, r);
}
int MPI_Request_free(MPI_Request *r) {
    for (int i = 0; i < npreq; i++)
        if (preq[i] == *r) { preq[i] = preq[--npreq]; pbytes[i] = pbytes[npreq]; break; }
    return PMPI_Request_free(r);
}
int MPI_Allreduce(const void *s, void *r, int c, MPI_Datatype t, MPI_Op o, MPI_Comm m) {
    add(K_ALLREDUCE, size_of(t, c));
    add_peers(K_ALLREDUCE, m);
    return PMPI_Allreduce(s, r, c, t, o, m);
}
int MPI_Iallreduce(const void *s, void *r, int c, MPI_Datatype t, MPI_Op o, MPI_Comm m,
                   MPI_Request *q) {
    add(K_IALLREDUCE, size_of(t, c));
    add_peers(K_IALLREDUCE, m);
    return PMPI_Iallreduce(s, r, c, t, o, m, q);
}
int MPI_Reduce(const void *s, void *r, int c, MPI_Datatype t, MPI_Op o, int root, MPI_Comm m) {
    add(K_REDUCE, size_of(t, c));
    add_peers(K_REDUCE, m);
    return PMPI_Reduce(s, r, c, t, o, root, m);
}
int MPI_Bcast(void *b, int c, MPI_Datatype t, int root, MPI_Comm m) {
    add(K_BCAST, size_of(t, c));
    add_peers(K_BCAST, m);
    return PMPI_Bcast(b, c, t, root, m);
}
int MPI_Barrier(MPI_Comm m) {
    add(K_BARRIER, 0);
    add_peers(K_BARRIER, m);
    return PMPI_Barrier(m);
}
int MPI_Ibarrier(MPI_Comm m, MPI_Request *q) {
    add(K_IBARRIER, 0);
    add_peers(K_IBARRIER, m);
    return PMPI_Ibarrier(m, q);
}
int MPI_Allgather(const void *s, int sc, MPI_Datatype st, void *r, int rc, MPI_Datatype rt,
                  MPI_Comm m) {
    add(K_ALLGATHER, s == MPI_IN_PLACE ? size_of(rt, rc) : size_of(st, sc));
    add_peers(K_ALLGATHER, m);
    return PMPI_Allgather(s, sc, st, r, rc, rt, m);
}
int MPI_Allgatherv(const void *s, int sc, MPI_Datatype st, void *r, const int rc[],
                   const int d[], MPI_Datatype rt, MPI_Comm m) {
    add(K_ALLGATHERV, s == MPI_IN_PLACE ? 0 : size_of(st, sc));
    add_peers(K_ALLGATHERV, m);
    return PMPI_Allgatherv(s, sc, st, r, rc, d, rt, m);
}
int MPI_Gather(const void *s, int sc, MPI_Datatype st, void *r, int rc, MPI_Datatype rt,
               int root, MPI_Comm m) {
    add(K_GATHER, s == MPI_IN_PLACE ? 0 : size_of(st, sc));
    add_peers(K_GATHER, m);
    return PMPI_Gather(s, sc, st, r, rc, rt, root, m);
}
int MPI_Gatherv(const void *s, int sc, MPI_Datatype st, void *r, const int rc[],
                const int d[], MPI_Datatype rt, int root, MPI_Comm m) {
    add(K_GATHERV, s == MPI_IN_PLACE ? 0 : size_of(st, sc));
    add_peers(K_GATHERV, m);
    return PMPI_Gatherv(s, sc, st, r, rc, d, rt, root, m);
}
int MPI_Scatter(const void *s, int sc, MPI_Datatype st, void *r, int rc, MPI_Datatype rt,
                int root, MPI_Comm m) {
    add(K_SCATTER, size_of(rt, rc));
    add_peers(K_SCATTER, m);
    return PMPI_Scatter(s, sc, st, r, rc, rt, root, m);
}
int MPI_Scatterv(const void *s, const int sc[], const int d[], MPI_Datatype st, void *r, int rc,
                 MPI_Datatype rt, int root, MPI_Comm m) {
    add(K_SCATTERV, size_of(rt, rc));
    add_peers(K_SCATTERV, m);
    return PMPI_Scatterv(s, sc, d, st, r, rc, rt, root, m);
}
int MPI_Alltoall(const void *s, int sc, MPI_Datatype st, void *r, int rc, MPI_Datatype rt,
                 MPI_Comm m) {
    int p = 1;
    PMPI_Comm_size(m, &p);
    add(K_ALLTOALL, size_of(st, (long long)sc * p));
    add_peers(K_ALLTOALL, m);
    return PMPI_Alltoall(s, sc, st, r, rc, rt, m);
}
int MPI_Alltoallv(const void *s, const int sc[], const int sd[], MPI_Datatype st, void *r,
                  const int rc[], const int rd[], MPI_Datatype rt, MPI_Comm m) {
    int p = 1;
    long long n = 0;
    PMPI_Comm_size(m, &p);
    for (int i = 0; i < p; i++) n += sc[i];
    add(K_ALLTOALLV, size_of(st, n));
    add_peers(K_ALLTOALLV, m);
    return PMPI_Alltoallv(s, sc, sd, st, r, rc, rd, rt, m);
}
int MPI_Alltoallw(const void *s, const int sc[], const int sd[], const MPI_Datatype st[], void *r,
                  const int rc[], const int rd[], const MPI_Datatype rt[], MPI_Comm m) {
    int p = 1;
    long long n = 0;
    PMPI_Comm_size(m, &p);
    for (int i = 0; i < p; i++) n += size_of(st[i], sc[i]);
    add(K_ALLTOALLW, n);
    add_peers(K_ALLTOALLW, m);
    return PMPI_Alltoallw(s, sc, sd, st, r, rc, rd, rt, m);
}
int MPI_Comm_split(MPI_Comm m, int color, int key, MPI_Comm *out) {
    add(K_SPLIT, 0);
    add_peers(K_SPLIT, m);
    return PMPI_Comm_split(m, color, key, out);
}
int MPI_Comm_split_type(MPI_Comm m, int type, int key, MPI_Info info, MPI_Comm *out) {
    add(K_SPLIT, 0);
    add_peers(K_SPLIT, m);
    return PMPI_Comm_split_type(m, type, key, info, out);
}
int MPI_Comm_dup(MPI_Comm m, MPI_Comm *out) {
    add(K_DUP, 0);
    add_peers(K_DUP, m);
    return PMPI_Comm_dup(m, out);
}
int MPI_Win_allocate_shared(MPI_Aint size, int du, MPI_Info info, MPI_Comm m, void *base,
                            MPI_Win *w) {
    add(K_WIN, size);
    return PMPI_Win_allocate_shared(size, du, info, m, base, w);
}
int MPI_Put(const void *o, int oc, MPI_Datatype ot, int tr, MPI_Aint td, int tc,
            MPI_Datatype tt, MPI_Win w) {
    add(K_RMA, size_of(ot, oc));
    return PMPI_Put(o, oc, ot, tr, td, tc, tt, w);
}
int MPI_Get(void *o, int oc, MPI_Datatype ot, int tr, MPI_Aint td, int tc, MPI_Datatype tt,
            MPI_Win w) {
    add(K_RMA, size_of(ot, oc));
    return PMPI_Get(o, oc, ot, tr, td, tc, tt, w);
}

/* MPI-4 large-count variants: mpi4py 4 calls these when the MPI has them */
int MPI_Send_c(const void *b, MPI_Count c, MPI_Datatype t, int d, int g, MPI_Comm m) {
    if (d != MPI_PROC_NULL) add(K_SEND, size_of(t, c));
    return PMPI_Send_c(b, c, t, d, g, m);
}
int MPI_Isend_c(const void *b, MPI_Count c, MPI_Datatype t, int d, int g, MPI_Comm m,
                MPI_Request *r) {
    if (d != MPI_PROC_NULL) add(K_SEND, size_of(t, c));
    return PMPI_Isend_c(b, c, t, d, g, m, r);
}
int MPI_Ssend_c(const void *b, MPI_Count c, MPI_Datatype t, int d, int g, MPI_Comm m) {
    if (d != MPI_PROC_NULL) add(K_SEND, size_of(t, c));
    return PMPI_Ssend_c(b, c, t, d, g, m);
}
int MPI_Sendrecv_c(const void *sb, MPI_Count sc, MPI_Datatype st, int d, int sg, void *rb,
                   MPI_Count rc, MPI_Datatype rt, int s, int rg, MPI_Comm m, MPI_Status *status) {
    if (d != MPI_PROC_NULL) add(K_SEND, size_of(st, sc));
    return PMPI_Sendrecv_c(sb, sc, st, d, sg, rb, rc, rt, s, rg, m, status);
}
int MPI_Send_init_c(const void *b, MPI_Count c, MPI_Datatype t, int d, int g, MPI_Comm m,
                    MPI_Request *r) {
    int err = PMPI_Send_init_c(b, c, t, d, g, m, r);
    if (d != MPI_PROC_NULL && npreq < SLOTS) {
        preq[npreq] = *r;
        pbytes[npreq++] = size_of(t, c);
    }
    return err;
}
int MPI_Allreduce_c(const void *s, void *r, MPI_Count c, MPI_Datatype t, MPI_Op o, MPI_Comm m) {
    add(K_ALLREDUCE, size_of(t, c));
    add_peers(K_ALLREDUCE, m);
    return PMPI_Allreduce_c(s, r, c, t, o, m);
}
int MPI_Reduce_c(const void *s, void *r, MPI_Count c, MPI_Datatype t, MPI_Op o, int root,
                 MPI_Comm m) {
    add(K_REDUCE, size_of(t, c));
    add_peers(K_REDUCE, m);
    return PMPI_Reduce_c(s, r, c, t, o, root, m);
}
int MPI_Bcast_c(void *b, MPI_Count c, MPI_Datatype t, int root, MPI_Comm m) {
    add(K_BCAST, size_of(t, c));
    add_peers(K_BCAST, m);
    return PMPI_Bcast_c(b, c, t, root, m);
}
int MPI_Allgather_c(const void *s, MPI_Count sc, MPI_Datatype st, void *r, MPI_Count rc,
                    MPI_Datatype rt, MPI_Comm m) {
    add(K_ALLGATHER, s == MPI_IN_PLACE ? size_of(rt, rc) : size_of(st, sc));
    add_peers(K_ALLGATHER, m);
    return PMPI_Allgather_c(s, sc, st, r, rc, rt, m);
}
int MPI_Allgatherv_c(const void *s, MPI_Count sc, MPI_Datatype st, void *r, const MPI_Count rc[],
                     const MPI_Aint d[], MPI_Datatype rt, MPI_Comm m) {
    add(K_ALLGATHERV, s == MPI_IN_PLACE ? 0 : size_of(st, sc));
    add_peers(K_ALLGATHERV, m);
    return PMPI_Allgatherv_c(s, sc, st, r, rc, d, rt, m);
}
int MPI_Gather_c(const void *s, MPI_Count sc, MPI_Datatype st, void *r, MPI_Count rc,
                 MPI_Datatype rt, int root, MPI_Comm m) {
    add(K_GATHER, s == MPI_IN_PLACE ? 0 : size_of(st, sc));
    add_peers(K_GATHER, m);
    return PMPI_Gather_c(s, sc, st, r, rc, rt, root, m);
}
int MPI_Gatherv_c(const void *s, MPI_Count sc, MPI_Datatype st, void *r, const MPI_Count rc[],
                  const MPI_Aint d[], MPI_Datatype rt, int root, MPI_Comm m) {
    add(K_GATHERV, s == MPI_IN_PLACE ? 0 : size_of(st, sc));
    add_peers(K_GATHERV, m);
    return PMPI_Gatherv_c(s, sc, st, r, rc, d, rt, root, m);
}
int MPI_Scatter_c(const void *s, MPI_Count sc, MPI_Datatype st, void *r, MPI_Count rc,
                  MPI_Datatype rt, int root, MPI_Comm m) {
    add(K_SCATTER, size_of(rt, rc));
    add_peers(K_SCATTER, m);
    return PMPI_Scatter_c(s, sc, st, r, rc, rt, root, m);
}
int MPI_Scatterv_c(const void *s, const MPI_Count sc[], const MPI_Aint d[], MPI_Datatype st,
                   void *r, MPI_Count rc, MPI_Datatype rt, int root, MPI_Comm m) {
    add(K_SCATTERV, size_of(rt, rc));
    add_peers(K_SCATTERV, m);
    return PMPI_Scatterv_c(s, sc, d, st, r, rc, rt, root, m);
}
int MPI_Alltoall_c(const void *s, MPI_Count sc, MPI_Datatype st, void *r, MPI_Count rc,
                   MPI_Datatype rt, MPI_Comm m) {
    int p = 1;
    PMPI_Comm_size(m, &p);
    add(K_ALLTOALL, size_of(st, sc * p));
    add_peers(K_ALLTOALL, m);
    return PMPI_Alltoall_c(s, sc, st, r, rc, rt, m);
}
int MPI_Alltoallv_c(const void *s, const MPI_Count sc[], const MPI_Aint sd[], MPI_Datatype st,
                    void *r, const MPI_Count rc[], const MPI_Aint rd[], MPI_Datatype rt,
                    MPI_Comm m) {
    int p = 1;
    long long n = 0;
    PMPI_Comm_size(m, &p);
    for (int i = 0; i < p; i++) n += sc[i];
    add(K_ALLTOALLV, size_of(st, n));
    add_peers(K_ALLTOALLV, m);
    return PMPI_Alltoallv_c(s, sc, sd, st, r, rc, rd, rt, m);
}
int MPI_Alltoallw_c(const void *s, const MPI_Count sc[], const MPI_Aint sd[],
                    const MPI_Datatype st[], void *r, const MPI_Count rc[], const MPI_Aint rd[],
                    const MPI_Datatype rt[], MPI_Comm m) {
    int p = 1;
    long long n = 0;
    PMPI_Comm_size(m, &p);
    for (int i = 0; i < p; i++) n += size_of(st[i], sc[i]);
    add(K_ALLTOALLW, n);
    add_peers(K_ALLTOALLW, m);
    return PMPI_Alltoallw_c(s, sc, sd, st, r, rc, rd, rt, m);
}
int MPI_Put_c(const void *o, MPI_Count oc, MPI_Datatype ot, int tr, MPI_Aint td, MPI_Count tc,
              MPI_Datatype tt, MPI_Win w) {
    add(K_RMA, size_of(ot, oc));
    return PMPI_Put_c(o, oc, ot, tr, td, tc, tt, w);
}
int MPI_Get_c(void *o, MPI_Count oc, MPI_Datatype ot, int tr, MPI_Aint td, MPI_Count tc,
              MPI_Datatype tt, MPI_Win w) {
    add(K_RMA, size_of(ot, oc));
    return PMPI_Get_c(o, oc, ot, tr, td, tc, tt, w);
}

/* neighbourhood collectives: counted as the messages they send (the out-degree) */
static int outdegree(MPI_Comm m) {
    int indeg = 0, outdeg = 0, weighted = 0;
    PMPI_Dist_graph_neighbors_count(m, &indeg, &outdeg, &weighted);
    return outdeg;
}
static void add_neighbor(MPI_Comm m, long long b) {
    if (sectioned && !counting) return;
    calls[section][K_NEIGHBOR] += outdegree(m);
    bytes[section][K_NEIGHBOR] += b;
}
int MPI_Neighbor_alltoall(const void *s, int sc, MPI_Datatype st, void *r, int rc,
                          MPI_Datatype rt, MPI_Comm m) {
    add_neighbor(m, size_of(st, (long long)sc * outdegree(m)));
    return PMPI_Neighbor_alltoall(s, sc, st, r, rc, rt, m);
}
int MPI_Neighbor_alltoall_c(const void *s, MPI_Count sc, MPI_Datatype st, void *r, MPI_Count rc,
                            MPI_Datatype rt, MPI_Comm m) {
    add_neighbor(m, size_of(st, sc * outdegree(m)));
    return PMPI_Neighbor_alltoall_c(s, sc, st, r, rc, rt, m);
}
int MPI_Neighbor_alltoallv(const void *s, const int sc[], const int sd[], MPI_Datatype st,
                           void *r, const int rc[], const int rd[], MPI_Datatype rt, MPI_Comm m) {
    long long n = 0;
    int d = outdegree(m);
    for (int i = 0; i < d; i++) n += sc[i];
    add_neighbor(m, size_of(st, n));
    return PMPI_Neighbor_alltoallv(s, sc, sd, st, r, rc, rd, rt, m);
}
int MPI_Neighbor_alltoallv_c(const void *s, const MPI_Count sc[], const MPI_Aint sd[],
                             MPI_Datatype st, void *r, const MPI_Count rc[], const MPI_Aint rd[],
                             MPI_Datatype rt, MPI_Comm m) {
    long long n = 0;
    int d = outdegree(m);
    for (int i = 0; i < d; i++) n += sc[i];
    add_neighbor(m, size_of(st, n));
    return PMPI_Neighbor_alltoallv_c(s, sc, sd, st, r, rc, rd, rt, m);
}

int MPI_Finalize(void) {
    const char *dir = getenv("MPICOUNT_DIR");
    int r = 0;
    PMPI_Comm_rank(MPI_COMM_WORLD, &r);
    if (dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/rank-%05d.txt", dir, r);
        FILE *f = fopen(path, "w");
        if (f) {
            for (int sct = 0; sct < SECTIONS; sct++)
                for (int k = 0; k < K_COUNT; k++)
                    if (calls[sct][k])
                        fprintf(f, "%d %s %lld %lld %lld\n", sct, NAMES[k], calls[sct][k],
                                bytes[sct][k], peers[sct][k]);
            fclose(f);
        }
    }
    return PMPI_Finalize();
}
