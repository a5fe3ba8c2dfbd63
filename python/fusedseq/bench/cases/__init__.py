"""The benchmark cases, one module per family of ops; each registers its
builders with :func:`fusedseq.bench.harness.case`. Adding a case means
writing one decorated builder (copy the nearest one) in its family's module;
a new module also goes on the import line below, which sets the run order."""
from . import recurrent, attention, attention_variants, loaded, lm_train  # noqa: F401
