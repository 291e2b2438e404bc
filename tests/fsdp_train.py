"""scripts/train.py with its FSDP on CPU ranks (torchrun, gloo), for the tests:

    torchrun --nproc_per_node 2 tests/fsdp_train.py TRAIN_PY_ARGUMENTS...

Accelerate takes the FSDP plugin only where its ranks have accelerators (a CPU rank trains under DDP), though
PyTorch's FSDP2 (fully_shard) runs on CPU with gloo. This lifts that one gate, as Accelerate's own state does for
GPU ranks, then runs train.py as it is.
"""

import runpy
import sys
from pathlib import Path

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

TRAIN = Path(__file__).resolve().parents[1] / "scripts" / "train.py"
accelerator_state_init = AcceleratorState.__init__


def init_with_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    accelerator_state_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        if self._mixed_precision != "no":
            fsdp_plugin.set_mixed_precision(self._mixed_precision)
        self.fsdp_plugin = fsdp_plugin
        PartialState._shared_state["distributed_type"] = self.distributed_type


AcceleratorState.__init__ = init_with_fsdp_on_cpu
sys.path.insert(0, str(TRAIN.parent))
sys.argv = [str(TRAIN), *sys.argv[1:]]
runpy.run_path(str(TRAIN), run_name="__main__")
