/* C reference for bench/heat2d.py: the same 5-point update, gcc -O3 -march=native.
   Usage: heat2d N STEPS  -> prints Gcell/s of the timed steps (one warm-up step first). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void step(const double *u, double *out, long m, double a) {
    for (long i = 1; i < m - 1; i++)
        for (long j = 1; j < m - 1; j++) {
            double c = u[i * m + j];
            out[i * m + j] = c + a * (u[(i - 1) * m + j] + u[(i + 1) * m + j] + u[i * m + j - 1] +
                                      u[i * m + j + 1] - 4.0 * c);
        }
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 4096, steps = argc > 2 ? atol(argv[2]) : 100, m = n + 2;
    double *u = calloc(m * m, sizeof(double)), *v = calloc(m * m, sizeof(double));
    for (long i = 1; i < m - 1; i++)
        for (long j = 1; j < m - 1; j++) u[i * m + j] = (double)((i * 7 + j * 13) % 101) / 101.0;
    step(u, v, m, 0.24);
    double t = now();
    for (long s = 0; s < steps; s++) {
        step(u, v, m, 0.24);
        double *w = u; u = v; v = w;
    }
    t = now() - t;
    printf("%.6f %.9g\n", (double)n * n * steps / t / 1e9, u[(m / 2) * m + m / 2]);
    return 0;
}
