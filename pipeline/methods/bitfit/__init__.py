"""BitFit (Ben Zaken, Ravfogel and Goldberg, ACL 2022): train only the encoder's bias terms
and the task head. Sparse by construction, so it is stored as a SparseDiff."""

from pipeline.methods.bitfit import method  # noqa: F401  (registers bitfit)
