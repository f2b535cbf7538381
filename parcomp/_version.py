"""The version of parcomp (read by ``parcomp.__version__`` and ``parcomp info``)."""

__version__ = "0.1.0"
