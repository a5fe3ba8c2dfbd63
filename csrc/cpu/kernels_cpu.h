// Entry points of the torch-free CPU kernels. T is float or double; the
// bindings compute fp16/bf16 inputs in float.
#pragma once
#include "common/params.h"

namespace fusedseq::cpu {

template <typename T> void rnn_cell_forward(const RnnCellFwdParams<T>& p, const ParallelFor& pf);
template <typename T> void rnn_cell_backward(const RnnCellBwdParams<T>& p, const ParallelFor& pf);
template <typename T> void rnn_seq_forward(const RnnSeqFwdParams<T>& p, const ParallelFor& pf);
template <typename T> void rnn_seq_backward(const RnnSeqBwdParams<T>& p, const ParallelFor& pf);

template <typename T> void lstm_cell_forward(const LstmCellFwdParams<T>& p, const ParallelFor& pf);
template <typename T> void lstm_cell_backward(const LstmCellBwdParams<T>& p, const ParallelFor& pf);
template <typename T> void lstm_seq_forward(const LstmSeqFwdParams<T>& p, const ParallelFor& pf);
template <typename T> void lstm_seq_backward(const LstmSeqBwdParams<T>& p, const ParallelFor& pf);

template <typename T> void gru_cell_forward(const GruCellFwdParams<T>& p, const ParallelFor& pf);
template <typename T> void gru_cell_backward(const GruCellBwdParams<T>& p, const ParallelFor& pf);
template <typename T> void gru_seq_forward(const GruSeqFwdParams<T>& p, const ParallelFor& pf);
template <typename T> void gru_seq_backward(const GruSeqBwdParams<T>& p, const ParallelFor& pf);

template <typename T> void attention_forward(const AttnFwdParams<T>& p, const ParallelFor& pf);
template <typename T> void attention_backward(const AttnBwdParams<T>& p, const ParallelFor& pf);

}  // namespace fusedseq::cpu

namespace fusedseq::cpu {
// The vector ISA these kernels were compiled for ("avx2+fma" or "scalar").
const char* simd_isa();
}  // namespace fusedseq::cpu
