// `elmo_fast vocab` and `elmo_fast prepare`: build a vocabulary; tokenise a config's corpora
// into the token cache (reused when unchanged).
#include <cstdio>

#include "app/commands.h"
#include "app/session.h"
#include "io/corpus.h"
#include "runtime/log.h"

namespace elmo {

int vocab_command(const VocabArgs& args) {
  const std::vector<std::string> files = resolve_corpus(args.corpus);
  std::vector<int64_t> counts;
  const Vocab vocab = build_vocab(files, args.min_count, args.max_size, &counts);
  vocab.save(args.out);
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  log_info("wrote ", args.out, ": ", vocab.size(), " tokens (3 specials first) from ",
           files.size(), " file(s), ", total, " counted word occurrences");
  return 0;
}

int prepare_command(const PrepareArgs& args) {
  const Config config = load_config(args.config, args.overrides);
  const DataFiles files = resolve_data_files(config);
  const Vocab vocab = prepare_vocab(config, files, /*rebuild=*/false);
  for (const auto& [label, spec] : {std::pair<const char*, std::string>{"train", files.train},
                                    {"valid", files.valid},
                                    {"test", files.test}}) {
    if (spec.empty()) continue;
    const TokenCache cache = TokenCache::open_or_build(spec, vocab, cache_dir(config));
    const TokenStats stats = cache.stats();
    log_info(label, ": ", spec, ": ", cache.num_shards(), " file(s), ", stats.sentences,
             " sentences, ", stats.tokens, " tokens, ", cache.shards_rebuilt(), " rebuilt, ",
             cache.num_shards() - cache.shards_rebuilt(), " reused");
    for (const CacheShardInfo& info : cache.shard_info())
      if (info.rebuilt) log_info("  ", info.source, ": ", info.reason);
  }
  return 0;
}

}  // namespace elmo
