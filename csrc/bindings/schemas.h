// The one place where fusedseq's op schemas are declared.
//
// X(name, schema) for every op. library.cpp defines them as torch.ops.fusedseq.*;
// any other library that must offer the same ops (the emulated CUDA kernels,
// torch.ops.fusedseq_emulated.*) defines them from this same list, so the
// two can never drift apart.
#pragma once

#define FUSEDSEQ_OP_SCHEMAS(X)                                                                                  \
  /* h' = act(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh), act = nonlinearity ('tanh' | 'relu') */                         \
  X(rnn_cell,                                                                                                   \
    "rnn_cell(Tensor x, Tensor h, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, str nonlinearity) "    \
    "-> Tensor")                                                                                                \
  /* -> (grad_x, grad_h, grad_w_ih, grad_w_hh, grad_b); grad_b is the gradient of either bias */               \
  X(rnn_cell_backward,                                                                                          \
    "rnn_cell_backward(Tensor grad_h_next, Tensor h_next, Tensor x, Tensor h, Tensor w_ih, Tensor w_hh, "       \
    "str nonlinearity) -> (Tensor, Tensor, Tensor, Tensor, Tensor)")                                            \
  /* x (T, B, I), h0 (B, H) -> (output (T, B, H), h_n (B, H)) */                                               \
  X(rnn,                                                                                                        \
    "rnn(Tensor x, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, str nonlinearity) "        \
    "-> (Tensor, Tensor)")                                                                                      \
  /* -> (grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b) */                                                     \
  X(rnn_backward,                                                                                               \
    "rnn_backward(Tensor grad_output, Tensor grad_h_n, Tensor output, Tensor x, Tensor h0, Tensor w_ih, "      \
    "Tensor w_hh, str nonlinearity) -> (Tensor, Tensor, Tensor, Tensor, Tensor)")                               \
  /* x (B, I), h/c (B, H) -> (h' (B, H), c' (B, H), gates (B, 4H)); gates: i, f, g, o after their        */ \
  /* activations, in the compute dtype (float32 for fp16/bf16 inputs): what the backward needs              */ \
  X(lstm_cell,                                                                                                  \
    "lstm_cell(Tensor x, Tensor h, Tensor c, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh) "           \
    "-> (Tensor, Tensor, Tensor)")                                                                              \
  /* -> (grad_x, grad_h, grad_c, grad_w_ih, grad_w_hh, grad_b); grad_b is the gradient of either bias */       \
  X(lstm_cell_backward,                                                                                         \
    "lstm_cell_backward(Tensor grad_h_next, Tensor grad_c_next, Tensor gates, Tensor x, Tensor h, Tensor c, "  \
    "Tensor w_ih, Tensor w_hh) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)")                            \
  /* x (T, B, I), h0/c0 (B, H) -> (output (T, B, H), cell_states (T, B, H), gates (T, B, 4H)); the last two */ \
  /* in the compute dtype; cell_states (every c_t) is differentiable, gates is not                          */ \
  X(lstm,                                                                                                       \
    "lstm(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh) "              \
    "-> (Tensor, Tensor, Tensor)")                                                                              \
  /* -> (grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b) */                                           \
  X(lstm_backward,                                                                                              \
    "lstm_backward(Tensor grad_output, Tensor grad_cell_states, Tensor output, Tensor cell_states, "           \
    "Tensor gates, Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh) "                                  \
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)")                                                      \
  /* x (B, I), h (B, H) -> (h' (B, H), gates (B, 4H)); gates: r, z, n, h W_hnᵀ + b_hn, compute dtype */       \
  X(gru_cell,                                                                                                   \
    "gru_cell(Tensor x, Tensor h, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh) -> (Tensor, Tensor)")  \
  /* -> (grad_x, grad_h, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh) */                                        \
  X(gru_cell_backward,                                                                                          \
    "gru_cell_backward(Tensor grad_h_next, Tensor gates, Tensor x, Tensor h, Tensor w_ih, Tensor w_hh) "       \
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)")                                                      \
  /* x (T, B, I), h0 (B, H) -> (output (T, B, H), gates (T, B, 4H) in the compute dtype) */                    \
  X(gru,                                                                                                        \
    "gru(Tensor x, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh) -> (Tensor, Tensor)")      \
  /* -> (grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh) */                                       \
  X(gru_backward,                                                                                               \
    "gru_backward(Tensor grad_output, Tensor output, Tensor gates, Tensor x, Tensor h0, Tensor w_ih, "         \
    "Tensor w_hh) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)")                                         \
  /* softmax(q kᵀ · scale + attn_mask) v, SDPA's meaning for every argument, plus a sliding window          */ \
  /* (window_left/right, -1 = unbounded) and dropout drawn from Philox(seed, offset).                         */ \
  /* q (B, Hq, Nq, D), k/v (B, Hkv, Nk, D), attn_mask broadcastable to (B, Hq, Nq, Nk)                        */ \
  /*   -> (out (B, Hq, Nq, D), lse (B, Hq, Nq), lse_lo (B, Hq, Nq)); lse + lse_lo is the row log-sum-exp      */ \
  X(attention_fwd,                                                                                              \
    "attention_fwd(Tensor q, Tensor k, Tensor v, Tensor? attn_mask, float dropout_p, bool is_causal, "         \
    "float scale, int window_left, int window_right, int seed, int offset) -> (Tensor, Tensor, Tensor)")        \
  /* -> (grad_q, grad_k, grad_v); attn_mask gets no gradient */                                                 \
  X(attention_bwd,                                                                                              \
    "attention_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor lse_lo, "     \
    "Tensor? attn_mask, float dropout_p, bool is_causal, float scale, int window_left, int window_right, "      \
    "int seed, int offset) -> (Tensor, Tensor, Tensor)")                                                        \
  /* Packed variable-length sequences (FlashAttention-2's varlen; causal and window bottom-right aligned):    */ \
  /* q (total_q, Hq, D), k/v (total_k, Hkv, D), cu_seqlens int32 (B + 1)                                     */ \
  /*   -> (out (total_q, Hq, D), lse (Hq, total_q), lse_lo (Hq, total_q))                                    */ \
  X(attention_varlen_fwd,                                                                                       \
    "attention_varlen_fwd(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor cu_seqlens_k, "            \
    "int max_seqlen_q, int max_seqlen_k, float dropout_p, bool is_causal, float scale, int window_left, "       \
    "int window_right, int seed, int offset) -> (Tensor, Tensor, Tensor)")                                      \
  /* -> (grad_q, grad_k, grad_v) */                                                                             \
  X(attention_varlen_bwd,                                                                                       \
    "attention_varlen_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "             \
    "Tensor lse_lo, Tensor cu_seqlens_q, Tensor cu_seqlens_k, int max_seqlen_q, int max_seqlen_k, "            \
    "float dropout_p, bool is_causal, float scale, int window_left, int window_right, int seed, int offset) "   \
    "-> (Tensor, Tensor, Tensor)")                                                                              \
  /* The dropout keep-mask attention_fwd draws for q's (B, Hq, Nq) and Nk keys: bool (B, Hq, Nq, Nk). Tests. */ \
  X(attention_dropout_mask, "attention_dropout_mask(Tensor q, int Nk, float dropout_p, int seed, int offset) -> Tensor")
