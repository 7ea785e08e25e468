"""How a compiled training step is split into its forward and its backward on the CPU: as eager autograd
splits it. Imported only when compiling (it loads torch's compiler) and where torch has the hook for it."""

from __future__ import annotations

import inspect
from typing import Any

from torch._functorch.partitioners import default_partition
from torch._inductor.custom_graph_pass import CustomPartitionerFn


class EagerPartition(CustomPartitionerFn):
    """torch's `default_partition`, which saves for the backward what eager autograd saves, in place of
    inductor's min-cut, which saves the smallest tensors it can: for each ReLU a bool mask, besides the
    float output the next layer's backward keeps anyway. Inductor's CPU code writes bool tensors over ten
    times slower than eager (torch 2.15, 2-core Xeon): the masks took 8 ms of a compiled paper_wd step's
    43, and compiling ran at 0.94x eager. A class at module level, so that the compile cache's key, which
    pickles it, can name it."""

    def __call__(self, gm: Any, joint_inputs: Any, **kwargs: Any) -> Any:
        accepted = inspect.signature(default_partition).parameters  # not min-cut's own, such as `compiler`
        return default_partition(gm, joint_inputs, **{k: v for k, v in kwargs.items() if k in accepted})

    def uuid(self) -> str:  # part of the compile cache's key: graphs split this way are cached apart
        return "grokking.partition.EagerPartition"
