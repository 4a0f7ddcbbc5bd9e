// Evaluation slices: the full-softmax NLL split by what the target word is, so a perplexity can
// be read for frequent and rare words separately. Ids are frequency ranks of the training
// vocabulary (io/vocab.h), so the slices are id ranges; every predicted token falls in exactly
// one slice:
//   eos    the direction's sentence end: `</S>` (forward) or `<S>` (backward): any target that
//          is one of the two (the forward direction never predicts `<S>`, the backward never
//          `</S>`; see io/batcher.h)
//   unk    `<UNK>` (words outside the vocabulary)
//   head   any other id below head_end (eval.head_ids; 0 = the most frequent 1% of the words)
//   torso  any other id in [head_end, torso_end) (eval.torso_ids; 0 = the most frequent 10%)
//   tail   any other id from torso_end on
// "The words" are the ids after the specials at the front of the vocabulary (bilm-tf's and
// `elmo_fast vocab`'s put `</S> <S> <UNK>` first): with 2003 ids, head = ids 3 .. 22 (20 words),
// torso = 23 .. 202, tail = 203 .. 2002. Shares are rounded up, so a small vocabulary still has
// a head word.
// The specials are matched by id, wherever the vocabulary file put them. The sums are fed one
// (target, NLL) pair at a time from the per-position NLLs whose sum is the overall NLL, so the
// token-weighted combination of the slices is the overall perplexity: sum over slices of
// count * log(ppl) = total count * log(total ppl), up to rounding.
// What it is not: a second evaluation; it only sorts NLLs evaluate_corpus computed anyway.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/vocab.h"
#include "model/full_softmax.h"

namespace elmo {

inline constexpr int kEvalSlices = 5;
enum EvalSlice : int { kSliceHead = 0, kSliceTorso, kSliceTail, kSliceUnk, kSliceEos };

const char* slice_name(int slice);   // "head", "torso", "tail", "unk", "eos" (JSON, metrics)
const char* slice_label(int slice);  // "head", "torso", "tail", "<UNK>", "</S> <S>" (tables)

struct SliceBounds {
  int64_t head_end = 0, torso_end = 0;
  int32_t bos = -1, eos = -1, unk = -1;
  int64_t vocab_size = 0;
  int64_t first_word = 0;  // the first id that is not a special

  int slice_of(int32_t target) const {
    if (target == eos || target == bos) return kSliceEos;
    if (target == unk) return kSliceUnk;
    return target < head_end ? kSliceHead : target < torso_end ? kSliceTorso : kSliceTail;
  }
  std::string ids(int slice) const;  // "3 .. 20", "<UNK> (2)", ...
};

// The bounds of `vocab` under eval.head_ids / eval.torso_ids (0 = first_word + 1% / 10% of the
// words, rounded up). UsageError when the head bound exceeds the torso bound (naming both keys
// and the resolved values).
SliceBounds slice_bounds(const Vocab& vocab, int64_t head_ids, int64_t torso_ids);

// NLL sums and counts per slice of one direction.
struct SliceSums {
  NllSum slice[kEvalSlices];
  void add(const SliceBounds& bounds, int32_t target, double nll) {
    NllSum& s = slice[bounds.slice_of(target)];
    s.nll += nll;
    ++s.count;
  }
};

}  // namespace elmo
