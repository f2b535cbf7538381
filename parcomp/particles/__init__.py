"""``DistParticles``: particles owned by the rank whose block holds them; plans, exchange,
deposit and interpolation.

May import: :mod:`parcomp.runtime`, :mod:`parcomp.grid`.
"""

from parcomp.particles.dist import DistParticles

__all__ = ["DistParticles"]
