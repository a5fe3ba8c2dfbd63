"""One module per op: its default shapes and dtypes (CPU, CUDA, quick), and
``make_cases``, which pairs fusedseq's implementation with the PyTorch paths
it is compared against."""
