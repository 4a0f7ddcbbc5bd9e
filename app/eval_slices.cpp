#include "app/eval_slices.h"

#include <algorithm>
#include <cmath>

#include "runtime/error.h"

namespace elmo {

namespace {

constexpr double kHeadShare = 0.01, kTorsoShare = 0.1;

int64_t share_of(int64_t words, double share) {
  return static_cast<int64_t>(std::ceil(share * static_cast<double>(words)));
}

std::string id_range(int64_t begin, int64_t end) {  // [begin, end) clipped by the caller
  if (begin >= end) return "none";
  return begin + 1 == end ? str(begin) : str(begin, " .. ", end - 1);
}

}  // namespace

const char* slice_name(int slice) {
  static const char* const names[kEvalSlices] = {"head", "torso", "tail", "unk", "eos"};
  ELMO_CHECK(slice >= 0 && slice < kEvalSlices, "no evaluation slice ", slice);
  return names[slice];
}

const char* slice_label(int slice) {
  static const char* const labels[kEvalSlices] = {"head", "torso", "tail", "<UNK>", "</S> <S>"};
  ELMO_CHECK(slice >= 0 && slice < kEvalSlices, "no evaluation slice ", slice);
  return labels[slice];
}

std::string SliceBounds::ids(int slice) const {
  const int64_t head = std::min(head_end, vocab_size), torso = std::min(torso_end, vocab_size);
  switch (slice) {
    case kSliceHead:
      return id_range(std::min(first_word, head), head);
    case kSliceTorso:
      return id_range(head, torso);
    case kSliceTail:
      return id_range(torso, vocab_size);
    case kSliceUnk:
      return str(unk);
    default:
      return str(eos, ", ", bos);
  }
}

SliceBounds slice_bounds(const Vocab& vocab, int64_t head_ids, int64_t torso_ids) {
  SliceBounds b;
  b.vocab_size = vocab.size();
  b.bos = vocab.bos_id();
  b.eos = vocab.eos_id();
  b.unk = vocab.unk_id();
  while (b.first_word < b.vocab_size &&
         (b.first_word == b.bos || b.first_word == b.eos || b.first_word == b.unk))
    ++b.first_word;
  const int64_t words = b.vocab_size - b.first_word;  // specials at the front aside
  b.head_end = head_ids > 0 ? head_ids : b.first_word + share_of(words, kHeadShare);
  b.torso_end = torso_ids > 0 ? torso_ids : b.first_word + share_of(words, kTorsoShare);
  if (b.head_end > b.torso_end)  // equal: an empty torso (a vocabulary of a few words)
    throw UsageError(str(
        "evaluation slices: the head bound ", b.head_end,
        head_ids > 0 ? " (eval.head_ids / --head-ids)" : " (1% of the words, eval.head_ids = 0)",
        " must not exceed the torso bound ", b.torso_end,
        torso_ids > 0 ? " (eval.torso_ids / --torso-ids)"
                      : " (10% of the words, eval.torso_ids = 0)",
        " for this vocabulary of ", b.vocab_size,
        " words: raise eval.torso_ids or lower "
        "eval.head_ids"));
  return b;
}

}  // namespace elmo
