"""A small forward + backward of fusedseq.rnn and rnn_cell (and of the LSTM
and GRU, sequence and cell) on CUDA, on both
recurrence paths, for tools/gpu_check.sh to run under compute-sanitizer
(racecheck, synccheck, memcheck): the persistent kernels' grid barrier and
shared-memory staging are where races would hide. Exits non-zero on a wrong
result; the sanitizer's own report decides the rest."""
import os

import torch

import fusedseq

torch.manual_seed(0)
dev = "cuda"
for path in ("persistent", "per_step"):
    os.environ["FUSEDSEQ_CUDA_RNN_PATH"] = path
    for dtype in (torch.float32, torch.bfloat16):
        T, B, I, H = 16, 4, 24, 264  # H not a multiple of the rows per block
        x = torch.randn(T, B, I, device=dev, dtype=dtype, requires_grad=True)
        h0 = torch.randn(B, H, device=dev, dtype=dtype, requires_grad=True)
        w_ih = (torch.randn(H, I, device=dev) / I ** 0.5).to(dtype).requires_grad_()
        w_hh = (torch.randn(H, H, device=dev) * 0.7 / H ** 0.5).to(dtype).requires_grad_()
        b = torch.randn(H, device=dev, dtype=dtype, requires_grad=True)
        out, h_n = fusedseq.rnn(x, h0, w_ih, w_hh, b, b)
        grads = torch.autograd.grad((out.float().square().sum() + h_n.float().sum()), [x, h0, w_ih, w_hh, b])
        cell = fusedseq.rnn_cell(x[0], h0, w_ih, w_hh, b, b)
        grads += torch.autograd.grad(cell.float().sum(), [x, h0, w_ih, w_hh])
        ref_out, _ = fusedseq.reference.rnn(x.detach().double().cpu(), h0.detach().double().cpu(),
                                            w_ih.detach().double().cpu(), w_hh.detach().double().cpu(),
                                            b.detach().double().cpu(), b.detach().double().cpu())
        err = ((out.double().cpu() - ref_out).norm() / ref_out.norm()).item()
        ok = err < (1e-5 if dtype == torch.float32 else 2e-2) and all(torch.isfinite(g).all() for g in grads)
        print(f"{path} {dtype}: relative error {err:.2e} {'ok' if ok else 'WRONG'}")
        assert ok
    for name in ("lstm", "gru"):  # the gated recurrences (csrc/cuda/gated_rnn.cu): H not a multiple of the units per block
        G, H = (4, 265) if name == "lstm" else (3, 263)
        x = torch.randn(T, B, I, device=dev, dtype=torch.float32, requires_grad=True)
        states = [torch.randn(B, H, device=dev, requires_grad=True) for _ in range(2 if name == "lstm" else 1)]
        w_ih = (torch.randn(G * H, I, device=dev) / I ** 0.5).requires_grad_()
        w_hh = (torch.randn(G * H, H, device=dev) * 0.7 / H ** 0.5).requires_grad_()
        b = torch.randn(G * H, device=dev, requires_grad=True)
        leaves = [x, *states, w_ih, w_hh, b]
        st = tuple(states) if name == "lstm" else states[0]
        out, fin = getattr(fusedseq, name)(x, st, w_ih, w_hh, b, b)
        fin = fin if isinstance(fin, tuple) else (fin,)
        grads = torch.autograd.grad(out.square().sum() + sum(f.sum() for f in fin), leaves)
        cell = getattr(fusedseq, name + "_cell")(x[0], st, w_ih, w_hh, b, b)
        cell = cell if isinstance(cell, tuple) else (cell,)
        grads += torch.autograd.grad(sum(c.sum() for c in cell), leaves)
        cpu = [t.detach().double().cpu() for t in leaves]
        ref_st = tuple(cpu[1:3]) if name == "lstm" else cpu[1]
        ref_out, _ = getattr(fusedseq.reference, name)(cpu[0], ref_st, *cpu[-3:], cpu[-1])
        err = ((out.double().cpu() - ref_out).norm() / ref_out.norm()).item()
        ok = err < 1e-5 and all(g is None or torch.isfinite(g).all() for g in grads)
        print(f"{path} {name} float32: relative error {err:.2e} {'ok' if ok else 'WRONG'}")
        assert ok
torch.cuda.synchronize()
