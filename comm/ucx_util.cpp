#include "comm/ucx_util.h"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>

#include "runtime/error.h"
#include "runtime/log.h"

namespace elmo {

std::string ucx_status_text(ucs_status_t status) {
  return str(ucs_status_string(status), " (UCX status ", static_cast<int>(status), ")");
}

void throw_ucx_failure(const char* expr, const char* file, int line, ucs_status_t status,
                       const std::string& where) {
  throw CommError(str(where.empty() ? "" : where + ": ", "UCX call `", expr,
                      "` failed: ", ucx_status_text(status), " (", file, ":", line,
                      "); check the UCX_* environment (UCX_TLS=tcp works on any network) and "
                      "`ucx_info -d` for the devices UCX sees"));
}

UcxWorker::UcxWorker(bool all_ranks_local, const std::string& where) {
  ucp_config_t* config = nullptr;
  ELMO_UCX_CHECK(ucp_config_read(nullptr, nullptr, &config), where);
  const char* tls = std::getenv("UCX_TLS");
  const char* devices = std::getenv("UCX_NET_DEVICES");
  transports_ =
      str("UCX_TLS=", tls ? tls : "(unset)", " UCX_NET_DEVICES=", devices ? devices : "(unset)");
  if (all_ranks_local && tls == nullptr) {
    ucs_status_t status = ucp_config_modify(config, "TLS", "tcp");
    if (status == UCS_OK && devices == nullptr)
      status = ucp_config_modify(config, "NET_DEVICES", "lo");
    if (status != UCS_OK) {
      ucp_config_release(config);
      throw_ucx_failure("ucp_config_modify(TLS=tcp, NET_DEVICES=lo)", __FILE__, __LINE__, status,
                        where);
    }
    transports_ =
        str("tcp over ", devices ? devices : "lo", " (all ranks on this host and UCX_TLS unset)");
  }

  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  const ucs_status_t init_status = ucp_init(&params, config, &context_);
  ucp_config_release(config);
  ELMO_UCX_CHECK(init_status, where);

  try {
    ucp_worker_params_t worker_params{};
    worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    worker_params.thread_mode = UCS_THREAD_MODE_SINGLE;
    ELMO_UCX_CHECK(ucp_worker_create(context_, &worker_params, &worker_), where);
    ELMO_UCX_CHECK(ucp_worker_get_efd(worker_, &event_fd_), where);
    ucp_address_t* address = nullptr;
    size_t address_length = 0;
    ELMO_UCX_CHECK(ucp_worker_get_address(worker_, &address, &address_length), where);
    address_.assign(reinterpret_cast<const char*>(address), address_length);
    ucp_worker_release_address(worker_, address);
  } catch (...) {
    if (worker_ != nullptr) ucp_worker_destroy(worker_);
    ucp_cleanup(context_);
    throw;
  }
}

void UcxWorker::destroy_worker() {
  if (worker_ != nullptr) ucp_worker_destroy(worker_);
  worker_ = nullptr;
}

UcxWorker::~UcxWorker() {
  destroy_worker();
  if (context_ != nullptr) ucp_cleanup(context_);
}

namespace {
constexpr size_t kMinCapacity = size_t{4} << 10;

// Capacities are m * 2^e with m in {4, 5, 6, 7}: at most 25% unused, few distinct classes.
size_t capacity_for(size_t bytes) {
  if (bytes <= kMinCapacity) return kMinCapacity;
  const int shift = std::bit_width(bytes - 1) - 3;
  const size_t mantissa = (bytes + (size_t{1} << shift) - 1) >> shift;  // 4..8
  return mantissa << shift;
}
}  // namespace

void StagingReturn::operator()(StagingBuffer* buffer) const {
  if (buffer != nullptr && pool != nullptr) pool->release(buffer);
}

BufferRef StagingPool::acquire(size_t bytes) {
  const size_t capacity = capacity_for(bytes);
  StagingBuffer* buffer = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(capacity);
    if (it != free_.end() && !it->second.empty()) {
      buffer = it->second.back();
      it->second.pop_back();
    }
  }
  if (buffer == nullptr) {
    auto fresh = std::make_unique<StagingBuffer>();
    fresh->capacity = capacity;
    fresh->data = static_cast<char*>(std::aligned_alloc(64, fresh->capacity));
    ELMO_CHECK(fresh->data != nullptr, "out of host memory for a ", fresh->capacity,
               "-byte UCX staging buffer");
    buffer = fresh.get();
    std::lock_guard<std::mutex> lock(mu_);
    all_.push_back(std::move(fresh));
  }
  buffer->size = bytes;
  return BufferRef(buffer, StagingReturn{this});
}

void StagingPool::release(StagingBuffer* buffer) {
  std::lock_guard<std::mutex> lock(mu_);
  free_[buffer->capacity].push_back(buffer);
}

ucp_mem_h StagingPool::registration(StagingBuffer& buffer, const std::string& where) {
  if (buffer.capacity < kRegisterBytes) return nullptr;
  if (buffer.memh == nullptr) {
    ucp_mem_map_params_t params{};
    params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    params.address = buffer.data;
    params.length = buffer.capacity;
    ELMO_UCX_CHECK(ucp_mem_map(context_, &params, &buffer.memh), where);
  }
  return buffer.memh;
}

StagingPool::~StagingPool() {
  for (auto& buffer : all_) {
    if (buffer->memh != nullptr) ucp_mem_unmap(context_, buffer->memh);
    std::free(buffer->data);
  }
}

}  // namespace elmo
