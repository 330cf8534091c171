"""The science of Toroid: plain torch + numpy + scipy, importable without the web service or Celery.

Modules (see ../shared/SCIENCE.md for the method):
- nets:      architectures from a JSON spec, and their unit structure (graphs: ResNets, layer graphs)
- groups:    unit groups (symmetries) derived from the traced module
- data:      datasets as tensors (bundled digits, local torchvision folders, synthetic)
- evaluate:  error and loss of one or many parameter points
- paths:     distances and paths between networks
- symmetry:  canonical forms, alignment
- flatness:  local energy
- plane:     2-D sections through three networks
- train:     samplers of minimizers
"""

# Version of the science code: part of every job's cache key. Bump it whenever a change to this
# package can change a result, so that cached results computed by older code are not reused.
SCIENCE_VERSION = "4"  # 4: unit groups from the traced module, BatchNorm batches of 256; 3: BatchNorm sign flip in
# the canonical form, exact plane nodes, init_seed, sampler defaults
