"""What a user touches first: the ``parcomp`` command line, notebooks' helpers, and MPI
workers spawned from a notebook.

May import: any package of parcomp.
"""
