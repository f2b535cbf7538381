"""An atomic ``fetch_add`` on int64 memory for Numba code (imports Numba: load lazily).

Module-level, so that a kernel calling it is cached under the same key in every process.
"""

from __future__ import annotations

from typing import Any

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def atomic_add(typingctx: Any, array: Any, index: Any, value: Any) -> Any:
    """``array[index] += value`` as one ``atomicrmw add`` (sequentially consistent);
    returns the old value."""
    sig = types.int64(array, index, value)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])
        return builder.atomic_rmw("add", ptr, args[2], "seq_cst")

    return sig, codegen


def fetch_add(array: Any, index: Any, value: Any) -> Any:  # pragma: no cover - compiled
    """Atomically add ``value`` to ``array[index]``; the old value."""
    return atomic_add(array, index, value)
