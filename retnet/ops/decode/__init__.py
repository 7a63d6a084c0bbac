"""Fused kernels of one small-batch decoding step of a RetNet layer (docs/inference.md, "The fused step").

At batch 1 to 4 a layer's step is four matrix-vector products, each bound by reading its weight, and a dozen small
operations between them, each of which costs a kernel launch (about 2 µs inside a CUDA graph on an H200) that the
products cannot hide. These kernels fold that work into the products, so that a RetNet layer takes five
launches:

* ``projections.py``: the matrix-vector products with what surrounds them: the block norm before a product
  (RMSNorm or LayerNorm, its statistics computed by each program), the rotation of q and k and the K^−½ key scale
  after the stacked q/k/v/g product, the GLU (act(a)·b) or the activation after the FFN's input product, the
  residual add after the output products, and, before the output projection, the head-wise norm and the swish
  gate.
* ``retention.py``: the recurrent retention step (paper Eq. 6) reading q, k and v from the stacked product's
  output and writing, beside the normalised outputs, the partial sums the head-wise norm needs.
* ``dependent.py``: programmatic dependent launch (Hopper and later): each kernel may start during the previous
  one's last wave, and waits for its results before it reads them.
* ``launch.py``: how a product is launched (:class:`~.launch.MatvecLaunch`), without importing Triton.

Importing ``projections`` or ``retention`` imports Triton (an optional dependency); this package itself does not.
The engine's use of the kernels is :mod:`retnet.generation.fused_step`.
"""
