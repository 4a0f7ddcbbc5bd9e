#include "runtime/pinned.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>

#include "runtime/cuda_check.h"
#include "runtime/stream.h"

namespace elmo {

namespace {

constexpr size_t kInitialArenaBytes = size_t{1} << 20;

struct Arena {
  char* data = nullptr;
  size_t capacity = 0;
  size_t used = 0;
  cudaEvent_t done = nullptr;  // recorded behind the arena's latest copy
  bool recorded = false;
};

struct Staging {
  std::mutex mutex;
  Arena arenas[2];
  int current = 0;
};

// Entries are never destroyed at exit (the driver may be gone by then); release_pinned_stream
// frees one when its stream goes away.
std::mutex& registry_mutex() {
  static auto* mutex = new std::mutex;
  return *mutex;
}
std::map<std::pair<int, cudaStream_t>, Staging*>& registry() {
  static auto* map = new std::map<std::pair<int, cudaStream_t>, Staging*>;
  return *map;
}

Staging& staging_for(int device, cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  Staging*& entry = registry()[{device, stream}];
  if (entry == nullptr) entry = new Staging;
  return *entry;
}

// Makes `arena` idle (its copies done) and at least `bytes` large.
void reset_arena(Arena& arena, size_t bytes) {
  if (arena.recorded) ELMO_CUDA_CHECK(cudaEventSynchronize(arena.done));
  arena.recorded = false;
  arena.used = 0;
  if (arena.capacity >= bytes) return;
  if (arena.data != nullptr) ELMO_CUDA_CHECK(cudaFreeHost(arena.data));
  arena.data = nullptr;
  arena.capacity = 0;
  const size_t capacity = std::max(kInitialArenaBytes, bytes + bytes / 2);
  void* data = nullptr;
  ELMO_CUDA_CHECK(cudaMallocHost(&data, capacity));
  arena.data = static_cast<char*>(data);
  arena.capacity = capacity;
}

}  // namespace

void upload_to_device(int device, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  cudaStream_t stream = current_stream();
  Staging& staging = staging_for(device, stream);
  std::lock_guard<std::mutex> lock(staging.mutex);
  ELMO_CUDA_CHECK(cudaSetDevice(device));
  Arena* arena = &staging.arenas[staging.current];
  if (arena->done == nullptr)
    for (Arena& a : staging.arenas)
      ELMO_CUDA_CHECK(cudaEventCreateWithFlags(&a.done, cudaEventDisableTiming));
  const size_t offset = (arena->used + 255) / 256 * 256;
  if (arena->data == nullptr || offset + bytes > arena->capacity) {
    staging.current ^= 1;  // the other arena, once its last copy is done
    arena = &staging.arenas[staging.current];
    reset_arena(*arena, bytes);
  } else {
    arena->used = offset;
  }
  char* slot = arena->data + arena->used;
  std::memcpy(slot, src, bytes);
  ELMO_CUDA_CHECK(cudaMemcpyAsync(dst, slot, bytes, cudaMemcpyHostToDevice, stream));
  ELMO_CUDA_CHECK(cudaEventRecord(arena->done, stream));
  arena->recorded = true;
  arena->used += bytes;
}

void release_pinned_stream(int device, cudaStream_t stream) noexcept {
  Staging* entry = nullptr;
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto it = registry().find({device, stream});
    if (it == registry().end()) return;
    entry = it->second;
    registry().erase(it);
  }
  for (Arena& a : entry->arenas) {
    if (a.recorded) (void)cudaEventSynchronize(a.done);
    if (a.done != nullptr) (void)cudaEventDestroy(a.done);
    if (a.data != nullptr) (void)cudaFreeHost(a.data);
  }
  delete entry;
}

}  // namespace elmo
