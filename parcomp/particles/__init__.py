"""``DistParticles``: particles owned by the rank whose block holds them; plans, exchange,
deposit and interpolation.

May import: :mod:`parcomp.runtime`, :mod:`parcomp.grid`.
"""

from parcomp.particles.dist import OUT_OF_DOMAIN, DistParticles

__all__ = ["DistParticles", "OUT_OF_DOMAIN"]
