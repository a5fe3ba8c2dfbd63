// How the CPU attention kernels cut their work, and the workspace that
// takes. The binding asks for a plan, allocates the buffers it names and
// passes them in the params; the kernels never allocate anything larger than
// a tile. Torch-free, ISA-independent (every ISA build follows the same
// plan, so the forward and backward always agree on it).
#pragma once
#include <algorithm>
#include <cstdint>

#include "common/params.h"

namespace fusedseq::cpu {

// A task owns a tile of up to kAttnBM query rows and walks the keys
// kAttnBN at a time. kAttnBM is a multiple of the 6-row register tile,
// kAttnBN of the 16-key panel.
constexpr int64_t kAttnBM = 48;
constexpr int64_t kAttnBN = 64;

// Decoding: with at most this many queries per head, the query heads that
// share a key/value head are stacked into one tile, so K and V are read once
// for the whole group, and K is read as stored (packing it would cost a full
// extra pass over the cache for a single use). Also FlashAttention's
// threshold for its split-KV path.
constexpr int64_t kAttnDecodeQueries = 16;

// Split-KV (flash-decoding) never makes a split shorter than this.
constexpr int64_t kAttnMinSplitKeys = 512;

// K packed into panels is at most this many elements (4 GiB of fp32):
// beyond, the kernels read K as stored.
constexpr int64_t kAttnMaxPackedElems = int64_t(1) << 30;

inline int64_t attn_div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Query tiles of one (sequence, key/value head): `heads_per_tile` query heads
// of the group times all their rows when Nq is short (decoding), else one
// head and kAttnBM of its rows.
struct AttnQueryTiling {
  int64_t heads_per_tile;  // 1 when Nq >= kAttnBM
  int64_t row_tiles;       // tiles along Nq per head (1 when heads are stacked)
  int64_t tiles;           // tiles per (sequence, key/value head)
};

inline AttnQueryTiling attention_query_tiling(const AttnShape& s) {
  const int64_t group = s.Hq / s.Hkv;
  if (s.Nq >= kAttnBM) {
    const int64_t row_tiles = attn_div_up(s.Nq, kAttnBM);
    return {1, row_tiles, group * row_tiles};
  }
  const int64_t fit = std::clamp<int64_t>(kAttnBM / s.Nq, 1, group);
  const int64_t tiles = attn_div_up(group, fit);
  return {attn_div_up(group, tiles), 1, tiles};  // balanced: e.g. 4 heads of 16 rows -> 2 tiles of 2 heads
}

// Elements of one packed copy of K (or V): 16-key panels per (sequence,
// key/value head). Varlen sequences are packed one after another, each
// rounded up to whole panels (hence the 15 spare keys per sequence).
inline int64_t attention_packed_elems(const AttnShape& s, bool varlen, int64_t total_k) {
  return varlen ? s.Hkv * (total_k + 15 * s.B) * s.D : s.B * s.Hkv * attn_div_up(s.Nk, 16) * 16 * s.D;
}

struct AttnPlan {
  bool pack_k;          // K (and V in the backward) packed into 16-key panels
  int64_t packed_elems; // size of one packed copy, when pack_k
  int64_t num_splits;   // forward: key ranges per row merged by log-sum-exp; 1 = none
};

// `threads`: the size of the thread pool the kernels will run on.
// The forward and the backward must compute the same scores bit for bit
// (the backward's P is recomputed against the forward's LSE), and packed and
// unpacked K sum Q·K in different orders, so pack_k depends on the shape
// alone, never on the pass.
inline AttnPlan attention_plan(const AttnShape& s, bool varlen, int64_t total_k, int64_t threads) {
  const int64_t packed = attention_packed_elems(s, varlen, total_k);
  const bool pack_k = s.Nq > kAttnDecodeQueries && packed <= kAttnMaxPackedElems;
  // Split the keys only when the query tiles cannot keep every thread busy.
  const int64_t tasks = s.B * s.Hkv * attention_query_tiling(s).tiles;
  int64_t splits = 1;
  if (tasks < 2 * threads) {
    splits = std::min(attn_div_up(4 * threads, tasks), s.Nk / kAttnMinSplitKeys);
    splits = std::max<int64_t>(splits, 1);
  }
  return {pack_k, pack_k ? packed : 0, splits};
}

}  // namespace fusedseq::cpu
