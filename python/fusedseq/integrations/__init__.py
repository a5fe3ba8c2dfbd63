"""Bridges from other libraries to fusedseq's ops. Each submodule imports its
library, which stays an optional dependency: ``import fusedseq`` imports none
of them.

    fusedseq.integrations.transformers   attn_implementation="fusedseq" for Hugging Face models
"""
