// The local VllmManager starting and stopping real fake_vllm children (§8): ready only on
// /health 200, the state file and the log, stop as a group (SIGTERM, SIGKILL after the grace),
// the start timeout, a child that dies while starting, a port somebody else holds.
#include "unit/vllm_manager_rig.hpp"

namespace imageworks::test {
namespace {

using VllmManager = VllmManagerFixture;

TEST_F(VllmManager, ActivateIsReadyOnlyAfterHealthReturns200) {
  // Refused for 150 ms, then 503 until 400 ms, then 200.
  const auto e = entry("alpha", "alpha-served", {"--fake-bind-delay-ms", "150", "--fake-load-ms", "400"});
  auto& m = manager();
  const auto t0 = std::chrono::steady_clock::now();
  auto done = m.activate(e);

  ASSERT_TRUE(events.wait_for("listening", 10s));
  const auto early = m.status();
  const bool returned_early = done.wait_for(0s) == std::future_status::ready;
  if (events.all("healthy").empty()) {  // both looked at while /health still said 503
    EXPECT_FALSE(returned_early) << "activate returned before /health said 200";
    EXPECT_EQ(early.state, BackendState::starting);
  }
  ASSERT_TRUE(settles(done));
  done.get();
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 400ms) << "ready before the fake finished loading";
  ASSERT_EQ(events.all("healthy").size(), 1u);

  const auto started = events.wait_for("started", 0s);
  ASSERT_TRUE(started);
  const auto st = m.status();
  EXPECT_EQ(st.state, BackendState::ready);
  EXPECT_EQ(st.logical_name, "alpha");
  EXPECT_EQ(st.served_model_id, "alpha-served");
  EXPECT_EQ(st.pid, started->at("pid").get<int>());
  EXPECT_EQ(st.port, cfg.vllm_port);
  EXPECT_EQ(st.base_url, "http://127.0.0.1:" + std::to_string(cfg.vllm_port));
  EXPECT_EQ(st.log_path, log_path("alpha").string());
  EXPECT_FALSE(st.adopted);
  EXPECT_TRUE(st.last_error.empty()) << st.last_error;

  // The default command reached the process: vLLM's flags, then extra_args.
  const auto argv = started->at("argv").get<std::vector<std::string>>();
  auto follows = [&](const std::string& flag, const std::string& value) {
    auto it = std::find(argv.begin(), argv.end(), flag);
    return it != argv.end() && it + 1 != argv.end() && *(it + 1) == value;
  };
  EXPECT_TRUE(follows("serve", "/models/alpha")) << started->dump();
  EXPECT_TRUE(follows("--served-model-name", "alpha-served")) << started->dump();
  EXPECT_TRUE(follows("--port", std::to_string(cfg.vllm_port))) << started->dump();
  EXPECT_TRUE(follows("--gpu-memory-utilization", "0.85")) << started->dump();
  EXPECT_TRUE(follows("--max-model-len", "8192")) << started->dump();
  EXPECT_EQ(started->at("pgid"), started->at("pid")) << "not the leader of a group of its own";

  const auto state = read_json_file(state_path());
  ASSERT_TRUE(state) << "no state file at " << state_path();
  EXPECT_EQ(state->value("logical_name", ""), "alpha");
  EXPECT_EQ(state->value("served_model_id", ""), "alpha-served");
  EXPECT_EQ(state->value("pid", 0), st.pid);
  EXPECT_EQ(state->value("port", 0), cfg.vllm_port);
  EXPECT_FALSE(state->value("started_at", "").empty());
  EXPECT_FALSE(std::filesystem::exists(state_path().string() + ".tmp"));

  // The child's stdout and stderr went to the log.
  EXPECT_NE(slurp_file(log_path("alpha")).find("fake vLLM serving /models/alpha"), std::string::npos);

  // Activating the ready model again starts nothing.
  auto again = m.activate(e);
  ASSERT_TRUE(settles(again));
  again.get();
  EXPECT_EQ(events.all("started").size(), 1u);
  EXPECT_EQ(m.status().pid, st.pid);
}

TEST_F(VllmManager, DeactivateStopsLeaderAndWorkerAndReapsTheLeader) {
  auto& m = manager();
  const auto [leader, worker] = activate_with_worker(m);
  ASSERT_NE(leader, 0);
  ASSERT_TRUE(process_alive(leader));
  ASSERT_TRUE(process_alive(worker));

  auto down = m.deactivate();
  ASSERT_TRUE(settles(down));
  down.get();
  EXPECT_TRUE(reaped(leader)) << "the leader is still there (or a zombie nobody reaped)";
  EXPECT_FALSE(process_alive(worker));
  const auto exit_event = events.wait_for("exit", 0s);
  ASSERT_TRUE(exit_event);
  EXPECT_EQ(exit_event->value("reason", ""), "sigterm");  // a polite stop, no SIGKILL needed
  EXPECT_FALSE(std::filesystem::exists(state_path()));
  const auto st = m.status();
  EXPECT_EQ(st.state, BackendState::stopped);
  EXPECT_EQ(st.pid, 0);
  EXPECT_TRUE(st.last_error.empty()) << st.last_error;
}

TEST_F(VllmManager, SigtermIgnoredMeansSigkillToTheGroupAfterTheGrace) {
  cfg.vllm_stop_grace_s = 1;
  auto& m = manager();
  const auto [leader, worker] = activate_with_worker(m, {"--fake-ignore-sigterm"});
  ASSERT_NE(leader, 0);

  const auto t0 = std::chrono::steady_clock::now();
  auto down = m.deactivate();
  ASSERT_TRUE(settles(down, 15s));
  down.get();
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 950ms) << "SIGKILL before the grace was over";
  EXPECT_TRUE(reaped(leader));
  // The fake never got to stop its worker: only the group's SIGKILL reaches it.
  EXPECT_TRUE(wait_process_gone(worker, 5s));
  const auto sigterm = events.wait_for("sigterm", 0s);
  ASSERT_TRUE(sigterm);
  EXPECT_TRUE(sigterm->value("ignored", false));
  EXPECT_TRUE(events.all("exit").empty()) << "it exited by itself: SIGTERM was not ignored";
  EXPECT_FALSE(std::filesystem::exists(state_path()));
  EXPECT_EQ(m.status().state, BackendState::stopped);
}

// Shutdown while a model loads: GpuCoordinator::stop(true) deactivates beside the start.
TEST_F(VllmManager, DeactivateDuringStartAbortsTheStart) {
  auto& m = manager();
  const auto t0 = std::chrono::steady_clock::now();
  auto up = m.activate(entry("alpha", "alpha", {"--fake-load-ms", "20000"}));
  const auto listening = events.wait_for("listening", 10s);
  ASSERT_TRUE(listening);
  auto down = m.deactivate();
  ASSERT_TRUE(settles(down, 10s));
  down.get();
  ASSERT_TRUE(settles(up, 10s)) << "the start went on after the deactivate";
  const auto err = error_of(up);
  ASSERT_TRUE(err) << "activate reported success for a server that was stopped";
  EXPECT_EQ(err->status, 503);
  EXPECT_NE(std::string(err->what()).find("was cancelled"), std::string::npos) << err->what();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  EXPECT_TRUE(reaped(listening->at("pid").get<pid_t>()));
  EXPECT_TRUE(events.all("healthy").empty());
  EXPECT_FALSE(std::filesystem::exists(state_path()));
  EXPECT_EQ(m.status().state, BackendState::stopped);
}

TEST_F(VllmManager, NeverHealthyIsStartTimeoutAndTheChildIsKilled) {
  cfg.vllm_start_timeout_s = 1;
  auto& m = manager();
  const auto t0 = std::chrono::steady_clock::now();
  auto up = m.activate(entry("alpha", "alpha", {"--fake-never-healthy"}));
  ASSERT_TRUE(settles(up));
  const auto err = error_of(up);
  ASSERT_TRUE(err) << "activate succeeded";
  EXPECT_EQ(err->status, 503);
  EXPECT_EQ(err->code, "err_model_start_timeout");
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 950ms);
  const auto started = events.wait_for("started", 0s);
  ASSERT_TRUE(started);
  EXPECT_TRUE(reaped(started->at("pid").get<pid_t>()));
  EXPECT_FALSE(std::filesystem::exists(state_path()));
  const auto st = m.status();
  EXPECT_EQ(st.state, BackendState::stopped);
  EXPECT_NE(st.last_error.find("did not become ready within 1 s"), std::string::npos) << st.last_error;
}

TEST_F(VllmManager, ChildExitingWhileStartingFailsAtOnce) {
  cfg.vllm_command = "/bin/false";
  cfg.vllm_start_timeout_s = 30;
  auto& m = manager();
  const auto t0 = std::chrono::steady_clock::now();
  auto up = m.activate(entry("alpha", "alpha"));
  ASSERT_TRUE(settles(up, 10s)) << "waited for the start timeout instead of noticing the exit";
  const auto err = error_of(up);
  ASSERT_TRUE(err) << "activate succeeded";
  EXPECT_EQ(err->status, 502);
  EXPECT_EQ(err->code, "err_backend_unavailable");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_NE(std::string(err->what()).find("exited with code 1"), std::string::npos) << err->what();
  const auto st = m.status();
  EXPECT_EQ(st.state, BackendState::stopped);
  EXPECT_FALSE(st.last_error.empty());
  EXPECT_FALSE(std::filesystem::exists(state_path()));
  EXPECT_LE(::waitpid(-1, nullptr, WNOHANG), 0) << "an exited child was left unreaped";
}

TEST_F(VllmManager, MissingExecutableIs502WithoutWaiting) {
  cfg.vllm_command = (dir.path() / "no-such-vllm").string();
  auto& m = manager();
  auto up = m.activate(entry("alpha", "alpha"));
  ASSERT_TRUE(settles(up, 10s));
  const auto err = error_of(up);
  ASSERT_TRUE(err) << "activate succeeded";
  EXPECT_EQ(err->status, 502);
  EXPECT_EQ(err->code, "err_backend_unavailable");
  EXPECT_NE(std::string(err->what()).find("no-such-vllm"), std::string::npos) << err->what();
  EXPECT_EQ(m.status().state, BackendState::stopped);
  EXPECT_FALSE(std::filesystem::exists(state_path()));
}

TEST_F(VllmManager, PortHeldByAnotherProcessIs502AndStartsNothing) {
  asio::io_context ioc;
  tcp::acceptor squatter(ioc, {asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(cfg.vllm_port)});
  // It listens and never answers: the kernel completes connections, nobody replies.
  auto& m = manager();
  auto up = m.activate(entry("alpha", "alpha"));
  ASSERT_TRUE(settles(up));
  const auto err = error_of(up);
  ASSERT_TRUE(err) << "activate succeeded";
  EXPECT_EQ(err->status, 502);
  EXPECT_EQ(err->code, "err_backend_unavailable");
  EXPECT_NE(std::string(err->what()).find(std::to_string(cfg.vllm_port)), std::string::npos) << err->what();
  EXPECT_TRUE(events.all("started").empty()) << "a server was started on a taken port";
  EXPECT_FALSE(std::filesystem::exists(log_path("alpha")));
  EXPECT_FALSE(std::filesystem::exists(state_path()));
  EXPECT_EQ(m.status().state, BackendState::stopped);
}

}  // namespace
}  // namespace imageworks::test
