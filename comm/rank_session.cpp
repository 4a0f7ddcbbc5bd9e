// A rank's session (RankSession, launch.h): joins the rendezvous (serving it for rank 0 under
// mpirun/srun), publishes this rank's address, waits for its peers, watches for faults and leaves
// cleanly at the end.
#include <unistd.h>

#include <sstream>

#include "comm/launch.h"
#include "runtime/log.h"

namespace elmo {

std::unique_ptr<RankSession> RankSession::join(const ProcessPlan& plan,
                                               std::function<void(const PeerLost&)> on_fault) {
  if (plan.kind == ProcessKind::kSingle) return nullptr;
  ELMO_CHECK(plan.kind == ProcessKind::kRank, "RankSession::join with a ",
             process_kind_name(plan.kind), " plan");
  std::unique_ptr<RankSession> session(new RankSession());
  session->topology_ = plan.topology;
  session->timeout_s_ = plan.timeout_s;
  const Topology& t = plan.topology;
  set_error_context(t.label());
  if (plan.serve_store) {
    session->server_ = std::make_unique<KvServer>("0.0.0.0", plan.root_port, plan.job_token);
    log_info("serving the rendezvous on 0.0.0.0:", session->server_->port(), " for ", t.world_size,
             " ranks");
  }
  KvClientOptions options;
  options.host = plan.serve_store ? "127.0.0.1" : plan.root_host;
  options.port = plan.root_port;
  options.token = plan.job_token;
  options.rank = t.rank;
  options.timeout_s = plan.timeout_s;
  options.connect_timeout_s = plan.timeout_s;
  session->client_ = std::make_unique<KvClient>(options);
  session->local_address_ = local_address_towards(plan.root_host);
  session->client_->set(str("join/rank/", t.rank),
                        str(::getpid(), " ", local_hostname(), " ", session->local_address_));
  const std::vector<std::string> peers =
      session->client_->gather_ranks("join/rank/", t.world_size, plan.timeout_s);
  // The route to the rendezvous host is loopback when this rank runs on it (rank 0 under
  // mpirun, or a node on the scheduler's machine); peers on other machines need a routable
  // address: take the route towards one of them.
  if (session->local_address_.rfind("127.", 0) == 0 || session->local_address_ == "::1") {
    const std::string my_host = local_hostname();
    for (const std::string& peer : peers) {
      std::istringstream in(peer);
      long pid = 0;
      std::string host;
      std::string address;
      in >> pid >> host >> address;
      if (host != my_host && !address.empty() && address.rfind("127.", 0) != 0 &&
          address != "::1") {
        session->local_address_ = local_address_towards(address);
        break;
      }
    }
  }
  session->client_->start_monitor(std::move(on_fault));
  return session;
}

RankSession::~RankSession() = default;

void RankSession::finish() {
  if (!client_) return;
  client_->leave();
  if (server_) {
    if (server_->wait_for_job(topology_.world_size, timeout_s_) != JobState::kFinished)
      log_warn("not every rank left the rendezvous within ", format_seconds(timeout_s_),
               "; closing it anyway");
    server_.reset();
  }
}

}  // namespace elmo
