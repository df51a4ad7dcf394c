"""Outgrowing one device: meshes, Keras distributions and the memory plan.

`mesh`: the device mesh (`parse_mesh`, `choose_mesh`), the Keras distribution
for it (`make_distribution`), multi-host setup (`initialize`, `is_writer`,
`data_shard`). `memory`: what a run needs per device, before anything loads
(`plan_memory`, `plan_for_config`, `fits`, `format_plan`). `placement.setup`:
the start of every run (initialize, plan, set the distribution).
"""

from keras_ft.distribution.mesh import (  # noqa: F401
    DATA_AXIS,
    MODEL_AXIS,
    DataShard,
    choose_mesh,
    data_shard,
    describe,
    initialize,
    is_writer,
    make_distribution,
    parse_mesh,
)
from keras_ft.distribution.placement import (  # noqa: F401
    Placement,
    kept_distribution,
    placed,
    setup,
)  # noqa: F401
