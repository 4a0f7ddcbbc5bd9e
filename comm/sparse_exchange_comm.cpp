// SparseExchange's comm thread: the one thread that makes UCX calls. It progresses the worker,
// sleeps on its event fd, sends what the caller queued, receives (eager copies, rendezvous
// receives), answers fetch requests from owned rows or defers them during an update window,
// stages everything else for the caller, and turns endpoint errors into PeerLost.
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "comm/sparse_exchange_impl.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace elmo {

using namespace sparse_wire;
using namespace sparse_detail;

// ---------------------------------------------------------------------------------------------
// Comm thread

void SparseExchange::Impl::wake() {
  if (wake_fd_ < 0) return;
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t written = ::write(wake_fd_, &one, sizeof one);
}

void SparseExchange::Impl::comm_main() {
  try {
    ucx_ = std::make_unique<UcxWorker>(topo_.local_size == topo_.world_size, label_);
    pool_ = std::make_unique<StagingPool>(ucx_->context());
    ucp_am_handler_param_t handler{};
    handler.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                         UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
    handler.id = kAmId;
    handler.flags = UCP_AM_FLAG_WHOLE_MSG;
    handler.cb = &Impl::on_am;
    handler.arg = this;
    ELMO_UCX_CHECK(ucp_worker_set_am_recv_handler(ucx_->worker(), &handler), label_);
    std::lock_guard<std::mutex> lock(mu_);
    address_ = ucx_->address();
    init_ = Init::kReady;
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lock(mu_);
    fatal_ = str("SparseExchange (", label_, "): UCX setup failed: ", e.what());
    init_ = Init::kFailed;
  }
  cv_.notify_all();
  if (init_ == Init::kFailed) return;

  bool graceful = false;
  try {
    run_loop();
    std::lock_guard<std::mutex> lock(mu_);
    graceful = graceful_;
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lock(mu_);
    if (fatal_.empty())
      fatal_ = str("SparseExchange (", label_, "): comm thread failed: ", e.what());
  }
  cv_.notify_all();
  try {
    close_endpoints(graceful);
  } catch (const std::exception& e) {
    log_warn("SparseExchange ", label_, ": closing UCX endpoints: ", e.what());
  }
}

void SparseExchange::Impl::run_loop() {
  ucp_worker_h worker = ucx_->worker();
  auto last_work = Clock::now();
  while (true) {
    bool worked = false;
    while (ucp_worker_progress(worker) != 0) worked = true;
    worked |= handle_incoming();
    worked |= handle_completions();
    worked |= handle_ep_errors();
    std::deque<Outgoing> sends;
    std::vector<std::string> connect;
    bool stop = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      sends.swap(outbox_);
      connect.swap(connect_to_);
      stop = stop_;
    }
    if (!connect.empty()) connect_peers(connect);
    for (Outgoing& message : sends)
      send(message.peer, message.kind, message.step, std::move(message.payload));
    if (stop) return;
    if (worked || !sends.empty() || !connect.empty()) {
      last_work = Clock::now();
      continue;
    }
    if (seconds_since(last_work) < kCommSpinSeconds) continue;
    const ucs_status_t armed = ucp_worker_arm(worker);
    if (armed == UCS_ERR_BUSY) continue;
    ELMO_UCX_CHECK(armed, label_);
    pollfd fds[2] = {{ucx_->event_fd(), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    // With operations in flight, wake up often even without events (a transport may need a
    // progress call that no fd announces); otherwise sleep until something happens.
    const int poll_ms = in_flight_.empty() && closing_.empty() ? 100 : 1;
    if (::poll(fds, 2, poll_ms) < 0 && errno != EINTR)
      throw CommError(str(label_, ": poll on the UCX event fd failed: ", std::strerror(errno)));
    if (fds[1].revents & POLLIN) {
      uint64_t count = 0;
      [[maybe_unused]] ssize_t n = ::read(wake_fd_, &count, sizeof count);
    }
    last_work = Clock::now() - std::chrono::seconds(1);  // sleep again right away if idle
  }
}

void SparseExchange::Impl::connect_peers(const std::vector<std::string>& addresses) {
  const std::string descriptor = descriptor_;
  for (int peer = 0; peer < topo_.world_size; ++peer) {
    if (peer == topo_.rank) continue;
    ucp_ep_params_t params{};
    params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                        UCP_EP_PARAM_FIELD_ERR_HANDLER;
    params.address = reinterpret_cast<const ucp_address_t*>(addresses[peer].data());
    params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    params.err_handler.cb = &Impl::on_ep_error;
    params.err_handler.arg = &slots_[peer];
    const ucs_status_t status = ucp_ep_create(ucx_->worker(), &params, &eps_[peer]);
    if (status != UCS_OK) {
      eps_[peer] = nullptr;
      peer_failed(peer, status, " (creating the endpoint from its published address)");
      continue;
    }
    BufferRef hello = pool_->acquire(descriptor.size());
    std::memcpy(hello->data, descriptor.data(), descriptor.size());
    send(peer, MsgKind::kHello, 0, std::move(hello));
  }
}

void SparseExchange::Impl::send(int peer, MsgKind kind, int64_t step, BufferRef payload) {
  if (eps_[peer] == nullptr) return;  // lost or closed: the loss is reported elsewhere
  auto* op = new Op;
  op->self = this;
  op->is_send = true;
  op->peer = peer;
  op->header.kind = static_cast<uint32_t>(kind);
  op->header.step = step;
  op->header.src = topo_.rank;
  op->header.num_tables = num_tables();
  op->header.payload_bytes = payload ? payload->size : 0;
  op->payload = std::move(payload);
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  params.cb.send = &Impl::on_send_done;
  params.user_data = op;
  const void* data = nullptr;
  size_t bytes = 0;
  if (op->payload) {
    data = op->payload->data;
    bytes = op->payload->size;
    if (ucp_mem_h memh = pool_->registration(*op->payload, label_)) {
      params.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
      params.memh = memh;
    }
  }
  const ucs_status_ptr_t request =
      ucp_am_send_nbx(eps_[peer], kAmId, &op->header, sizeof(MsgHeader), data, bytes, &params);
  if (request == nullptr) {
    delete op;
  } else if (UCS_PTR_IS_ERR(request)) {
    const ucs_status_t status = UCS_PTR_STATUS(request);
    delete op;
    peer_failed(peer, status, str(" (sending a ", kind_name(static_cast<uint32_t>(kind)), ")"));
  } else {
    op->request = request;
    in_flight_.insert(op);
  }
}

ucs_status_t SparseExchange::Impl::on_am(void* arg, const void* header, size_t header_length,
                                         void* data, size_t length,
                                         const ucp_am_recv_param_t* param) {
  auto* self = static_cast<Impl*>(arg);
  Incoming in;
  in.header_error = check_header(header, header_length, length, self->topo_.rank,
                                 self->topo_.world_size, &in.header);
  const bool rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
  if (!in.header_error.empty()) {
    self->incoming_.push_back(std::move(in));
    return UCS_OK;  // drops rendezvous data too
  }
  if (rndv) {
    in.rndv_desc = data;
    in.length = length;
    self->incoming_.push_back(std::move(in));
    return UCS_INPROGRESS;  // received in handle_incoming (no UCX calls from this callback)
  }
  if (length > 0) {
    in.payload = self->pool_->acquire(length);
    std::memcpy(in.payload->data, data, length);
  }
  self->incoming_.push_back(std::move(in));
  return UCS_OK;
}

void SparseExchange::Impl::on_send_done(void* /*request*/, ucs_status_t status, void* user_data) {
  auto* op = static_cast<Op*>(user_data);
  op->status = status;
  op->self->completed_.push_back(op);
}

void SparseExchange::Impl::on_recv_done(void* /*request*/, ucs_status_t status, size_t /*length*/,
                                        void* user_data) {
  auto* op = static_cast<Op*>(user_data);
  op->status = status;
  op->self->completed_.push_back(op);
}

void SparseExchange::Impl::on_ep_error(void* arg, ucp_ep_h ep, ucs_status_t status) {
  auto* slot = static_cast<PeerSlot*>(arg);
  slot->self->ep_errors_.push_back({slot->rank, ep, status});
}

bool SparseExchange::Impl::handle_incoming() {
  if (incoming_.empty()) return false;
  std::vector<Incoming> batch;
  batch.swap(incoming_);
  for (Incoming& in : batch) {
    if (!in.header_error.empty()) {
      protocol_error(-1, "malformed message: " + in.header_error);
      continue;
    }
    if (in.rndv_desc == nullptr) {
      dispatch(in.header, std::move(in.payload));
      continue;
    }
    auto* op = new Op;
    op->self = this;
    op->is_send = false;
    op->peer = in.header.src;
    op->header = in.header;
    op->payload = pool_->acquire(in.length);
    ucp_request_param_t params{};
    params.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    params.cb.recv_am = &Impl::on_recv_done;
    params.user_data = op;
    if (ucp_mem_h memh = pool_->registration(*op->payload, label_)) {
      params.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
      params.memh = memh;
    }
    const ucs_status_ptr_t request =
        ucp_am_recv_data_nbx(ucx_->worker(), in.rndv_desc, op->payload->data, in.length, &params);
    if (request == nullptr) {
      dispatch(op->header, std::move(op->payload));
      delete op;
    } else if (UCS_PTR_IS_ERR(request)) {
      const ucs_status_t status = UCS_PTR_STATUS(request);
      const int peer = op->peer;
      const uint32_t kind = op->header.kind;
      delete op;
      peer_failed(peer, status, str(" (receiving a ", kind_name(kind), ")"));
    } else {
      op->request = request;
      in_flight_.insert(op);
    }
  }
  return true;
}

bool SparseExchange::Impl::handle_completions() {
  if (completed_.empty()) return false;
  std::vector<Op*> batch;
  batch.swap(completed_);
  for (Op* op : batch) {
    in_flight_.erase(op);
    if (op->request != nullptr) ucp_request_free(op->request);
    if (op->status != UCS_OK) {
      peer_failed(
          op->peer, op->status,
          str(op->is_send ? " (sending a " : " (receiving a ", kind_name(op->header.kind), ")"));
    } else if (!op->is_send) {
      dispatch(op->header, std::move(op->payload));
    }
    delete op;
  }
  return true;
}

bool SparseExchange::Impl::handle_ep_errors() {
  if (ep_errors_.empty()) return false;
  std::vector<EpError> batch;
  batch.swap(ep_errors_);
  for (const EpError& error : batch) peer_failed(error.peer, error.status, "");
  return true;
}

void SparseExchange::Impl::peer_failed(int peer, ucs_status_t status, const std::string& what) {
  if (eps_[peer] != nullptr) {
    // An endpoint that reported an error is unusable: release it without flushing.
    ucp_request_param_t params{};
    params.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    params.flags = UCP_EP_CLOSE_FLAG_FORCE;
    const ucs_status_ptr_t request = ucp_ep_close_nbx(eps_[peer], &params);
    if (UCS_PTR_IS_PTR(request)) closing_.push_back(request);
    eps_[peer] = nullptr;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (bye_[peer] || stop_ || lost_[peer]) return;  // gone after its goodbye: not a failure
    lost_[peer] = 1;
    if (first_lost_ < 0) {
      first_lost_ = peer;
      lost_message_ = str("SparseExchange (", label_, "): rank ", peer, " was lost: UCX reported ",
                          ucx_status_text(status), " on its endpoint", what,
                          "; the process died, was killed or its host is unreachable (check "
                          "rank ",
                          peer, "'s log)");
    }
  }
  cv_.notify_all();
}

void SparseExchange::Impl::protocol_error(int peer, const std::string& what) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (fatal_.empty())
      fatal_ = str("SparseExchange (", label_, "): protocol error",
                   peer >= 0 ? str(" with rank ", peer) : std::string(), ": ", what,
                   "; every rank must make the same calls for the same steps with the same "
                   "tables (and run the same elmo_fast build)");
  }
  cv_.notify_all();
}

void SparseExchange::Impl::dispatch(const MsgHeader& header, BufferRef payload) {
  const int peer = header.src;
  const auto kind = static_cast<MsgKind>(header.kind);
  if (header.num_tables != num_tables()) {
    protocol_error(peer, str(kind_name(header.kind), " for ", header.num_tables,
                             " tables (this rank has ", num_tables(), ")"));
    return;
  }
  if (kind == MsgKind::kFetchRequest) {
    answer_request(peer, header.step, std::move(payload));
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    Staged* staged = nullptr;
    switch (kind) {
      case MsgKind::kHello:
        if (!payload) payload = pool_->acquire(0);
        hello_[peer] = std::move(payload);
        break;
      case MsgKind::kGoodbye:
        bye_[peer] = 1;
        break;
      case MsgKind::kFetchReply:
        staged = &replies_;
        break;
      case MsgKind::kStepDone:
        staged = &done_;
        break;
      case MsgKind::kGradients:
        staged = &grads_;
        break;
      default:
        break;
    }
    if (staged != nullptr) {
      std::vector<BufferRef>& slots = (*staged)[header.step];
      if (slots.empty()) slots.resize(topo_.world_size);
      if (slots[peer]) {
        if (fatal_.empty())
          fatal_ = str("SparseExchange (", label_, "): protocol error with rank ", peer,
                       ": a second ", kind_name(header.kind), " for step ", header.step,
                       "; every rank must make the same calls for the same steps");
      } else {
        if (!payload) payload = pool_->acquire(0);  // parsed (and rejected) by the caller
        slots[peer] = std::move(payload);
      }
    }
  }
  cv_.notify_all();
}

void SparseExchange::Impl::answer_request(int peer, int64_t step, BufferRef payload) {
  RowsView view;
  std::string problem = parse_rows(payload.get(), tables_, false, &view);
  for (int t = 0; t < num_tables() && problem.empty(); ++t) {
    problem = check_owned_ids(view.ids[t], owned_[t]);
    if (!problem.empty()) problem = str("table ", t, ": ", problem, " (ids this rank owns)");
  }
  if (!problem.empty()) {
    protocol_error(peer, str("bad fetch request for step ", step, ": ", problem));
    return;
  }
  FetchRequest request{peer, step, IdLists(tables_.size())};
  for (int t = 0; t < num_tables(); ++t)
    request.ids[t].assign(view.ids[t].begin(), view.ids[t].end());
  payload.reset();
  std::string refusal;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (update_step_) {
      if (step == *update_step_ + 1) {
        deferred_.push_back(std::move(request));
        deferred_count_.fetch_add(1);
        return;
      }
      refusal = str("updates step ", *update_step_);
    } else if (last_updated_ && (step < *last_updated_ + 1 || step > *last_updated_ + 2)) {
      refusal = str("has completed step ", *last_updated_);
    } else {
      // Answered before this rank's next update: remember it, so that update refreshes it.
      if (!(last_updated_ && step == *last_updated_ + 1)) remembered_.push_back(request);
      ++readers_;
    }
  }
  if (!refusal.empty()) {
    protocol_error(peer, str("fetch request for step ", step, " while this rank ", refusal));
    return;
  }
  std::vector<RowsSource> sources(tables_.size());
  int64_t rows = 0;
  for (int t = 0; t < num_tables(); ++t) {
    sources[t].ids = request.ids[t];
    rows += static_cast<int64_t>(request.ids[t].size());
  }
  BufferRef reply;
  try {
    reply = encode_rows(sources, true);  // reads owned rows: no update window is open
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      --readers_;
    }
    cv_.notify_all();
    throw;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    --readers_;
  }
  cv_.notify_all();
  served_rows_.fetch_add(rows);
  served_bytes_.fetch_add(static_cast<int64_t>(reply->size));
  send(peer, MsgKind::kFetchReply, step, std::move(reply));
}

void SparseExchange::Impl::close_endpoints(bool graceful) {
  ucp_worker_h worker = ucx_->worker();
  ucp_request_param_t params{};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  params.flags = graceful ? 0 : UCP_EP_CLOSE_FLAG_FORCE;  // 0: flush what was sent, then close
  for (ucp_ep_h& ep : eps_) {
    if (ep == nullptr) continue;
    const ucs_status_ptr_t request = ucp_ep_close_nbx(ep, &params);
    if (UCS_PTR_IS_PTR(request)) closing_.push_back(request);
    ep = nullptr;
  }
  const auto start = Clock::now();
  const double limit = graceful ? std::min(options_.timeout_s, 10.0) : 2.0;
  while (!closing_.empty() && seconds_since(start) < limit) {
    ucp_worker_progress(worker);
    handle_completions();  // cancelled sends return their buffers
    std::erase_if(closing_, [](void* request) {
      if (ucp_request_check_status(request) == UCS_INPROGRESS) return false;
      ucp_request_free(request);
      return true;
    });
    if (!closing_.empty()) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  if (!closing_.empty())
    log_warn("SparseExchange ", label_, ": ", closing_.size(),
             " UCX endpoints did not close within ", limit, " s; releasing them anyway");
  closing_.clear();
  ep_errors_.clear();
}

}  // namespace elmo
