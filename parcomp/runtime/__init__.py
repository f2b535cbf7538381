"""The MPI runtime: ranks and communicators, agreement (raise on every rank), the call
identity of collectives, hang diagnosis, configuration, exit statuses, logging, reductions,
JIT compilation, ULFM recovery.

May import: nothing else of parcomp (it is the ground floor).
"""
