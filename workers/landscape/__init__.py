"""The science of Toroid: plain torch + numpy + scipy, importable without the web service or Celery.

Modules (docs/science.md gives the method):
- nets:      architectures from a JSON spec (graphs: ResNets, layer graphs)
- groups:    unit groups (symmetries) derived from the traced module
- data:      datasets as tensors (bundled digits, local torchvision folders, synthetic)
- evaluate:  error and loss of one or many parameter points
- paths:     distances and paths between networks
- symmetry:  canonical forms, alignment
- flatness:  local energy
- hessian:   top eigenvalues and trace of the loss's Hessian, raw and on the tangent space of the spheres
- plane:     2-D sections through three networks
- slice:     random-direction sections around one network
- bend:      single-bend paths (a trained midpoint)
- kinds:     every job kind declared once; params: the one validator
- train:     samplers of minimizers
"""

# Version of the science code: part of every job's cache key. Bump it whenever a change to this
# package can change a result, so that cached results computed by older code are not reused.
SCIENCE_VERSION = "6"  # 6: alignment flips BatchNorm units to a's gamma signs, a bias through a max-pool folds into
# BatchNorm, BatchNorms in a row, weights on no sphere in the geodesic distance, RSGD's coupling scaled to the run's
# epochs (unchanged at 200), the hessian kind; 5: tensors taken in the module's order wherever an order matters (a slice's random
# directions were drawn in the order a weights file was read back, which differed from process to process:
# the same slice job gave other numbers on another worker), canonical slices of residual and graph networks;
# 4: unit groups from the traced module, BatchNorm batches of 256; 3: BatchNorm sign flip in
# the canonical form, exact plane nodes, init_seed, sampler defaults
