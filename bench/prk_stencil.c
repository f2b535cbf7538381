/* C + MPI reference for jobs/prk_stencil.py: the PRK "stencil" kernel, star, radius 2.

   As the PRK MPI1 version does, without temporal blocking: each iteration exchanges
   R = 2 ghost rows with the neighbours (row slabs, MPI_Sendrecv), applies the star stencil
   to the active cells (at least R from the grid's edge), accumulating into out in the
   order of parcomp.kernels.prk_star2 (so both give the same bits), then adds 1 to every
   cell of in.  Iteration 0 is untimed.  Verification: mean |out| over the active cells is
   (iterations + 1) * 2.

   Build: mpicc -O3 -march=native prk_stencil.c -o prk_stencil
   Usage: mpiexec -n P prk_stencil N ITERATIONS
   Prints: MFLOPS SECONDS_PER_ITERATION NORM */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#define R 2

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long n = argc > 1 ? atol(argv[1]) : 4096, iterations = argc > 2 ? atol(argv[2]) : 20;
    long r0 = n * rank / size, r1 = n * (rank + 1) / size, rows = r1 - r0;
    long w = n; /* whole rows: no ghost columns (the active region stops R from the edge) */
    double *in = calloc((rows + 2 * R) * w, sizeof(double));
    double *out = calloc((rows + 2 * R) * w, sizeof(double));
    if (!in || !out) MPI_Abort(MPI_COMM_WORLD, 2);
#define IN(i, j) in[((i) - r0 + R) * w + (j)]
#define OUT(i, j) out[((i) - r0 + R) * w + (j)]
    for (long i = r0; i < r1; i++)
        for (long j = 0; j < n; j++) IN(i, j) = (double)(i + j);
    int up = rank > 0 ? rank - 1 : MPI_PROC_NULL, down = rank < size - 1 ? rank + 1 : MPI_PROC_NULL;
    long lo = r0 > R ? r0 : R, hi = r1 < n - R ? r1 : n - R;
    double t = 0.0;
    for (long it = 0; it <= iterations; it++) {
        if (it == 1) {
            MPI_Barrier(MPI_COMM_WORLD);
            t = MPI_Wtime();
        }
        MPI_Sendrecv(&IN(r0, 0), R * w, MPI_DOUBLE, up, 1, &IN(r1, 0), R * w, MPI_DOUBLE, down, 1,
                     MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        MPI_Sendrecv(&IN(r1 - R, 0), R * w, MPI_DOUBLE, down, 2, &IN(r0 - R, 0), R * w, MPI_DOUBLE,
                     up, 2, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        for (long i = lo; i < hi; i++)
            for (long j = R; j < n - R; j++) {
                double o = OUT(i, j);
                o += -0.125 * IN(i, j - 2);
                o += -0.25 * IN(i, j - 1);
                o += 0.0 * IN(i, j);
                o += 0.25 * IN(i, j + 1);
                o += 0.125 * IN(i, j + 2);
                o += -0.125 * IN(i - 2, j);
                o += -0.25 * IN(i - 1, j);
                o += 0.25 * IN(i + 1, j);
                o += 0.125 * IN(i + 2, j);
                OUT(i, j) = o;
            }
        for (long i = r0; i < r1; i++)
            for (long j = 0; j < n; j++) IN(i, j) += 1.0;
    }
    MPI_Barrier(MPI_COMM_WORLD);
    t = MPI_Wtime() - t;
    double local = 0.0, norm = 0.0;
    for (long i = lo; i < hi; i++)
        for (long j = R; j < n - R; j++) local += fabs(OUT(i, j));
    MPI_Allreduce(&local, &norm, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    double active = (double)(n - 2 * R) * (double)(n - 2 * R);
    norm /= active;
    double reference = (iterations + 1) * 2.0;
    if (rank == 0) {
        printf("%.3f %.9f %.15g\n", 19.0 * active * iterations / t / 1e6, t / iterations, norm);
        if (fabs(norm - reference) > 1e-8 * reference) fprintf(stderr, "ERROR: norm %g\n", norm);
    }
    free(in);
    free(out);
    MPI_Finalize();
    return 0;
}
