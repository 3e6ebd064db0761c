// The local VllmManager when things happen behind its back (§8): a server that crashes after
// it was ready, a proxy restart that adopts the running server, a state file naming a dead
// (or reused) pid, a switch between two models on the one port.
#include <spawn.h>
#include <sys/stat.h>

#include "unit/vllm_manager_rig.hpp"

extern char** environ;

namespace imageworks::test {
namespace {

using VllmManagerRecovery = VllmManagerFixture;

// Starts argv in a process group of its own; the caller reaps it.
pid_t spawn_plain(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], nullptr, &attr, argv.data(), environ);
  posix_spawnattr_destroy(&attr);
  return rc == 0 ? pid : -1;
}

std::optional<unsigned long long> start_ticks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  std::istringstream rest(line.substr(line.rfind(')') + 2));  // field 3 onwards
  std::string field;
  for (int i = 3; i <= 22 && rest >> field; ++i) {
    if (i == 22) return std::stoull(field);
  }
  return std::nullopt;
}

void write_state(const std::filesystem::path& p, pid_t pid, int port, unsigned long long ticks) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream(p) << json{{"logical_name", "alpha"}, {"served_model_id", "alpha"}, {"pid", pid}, {"port", port},
                           {"started_at", "2025-01-01T00:00:00Z"}, {"state", "ready"}, {"start_ticks", ticks}}
                          .dump();
}

TEST_F(VllmManagerRecovery, CrashAfterReadyIsReportedAndCleanedUp) {
  auto& m = manager();
  auto exited = std::make_shared<std::promise<std::string>>();
  auto reported = exited->get_future();
  auto calls = std::make_shared<int>(0);
  m.on_unexpected_exit([exited, calls](const std::string& why) {
    if ((*calls)++ == 0) exited->set_value(why);
  });
  const auto [leader, worker] = activate_with_worker(m, {"--fake-crash-after-ms", "300"});
  ASSERT_NE(leader, 0);

  ASSERT_EQ(reported.wait_for(10s), std::future_status::ready) << "on_unexpected_exit did not run";
  const std::string why = reported.get();
  EXPECT_NE(why.find("exited on its own with code 3"), std::string::npos) << why;
  EXPECT_TRUE(events.wait_for("crash", 0s));
  const auto st = m.status();
  EXPECT_EQ(st.state, BackendState::stopped);
  EXPECT_EQ(st.last_error, why);
  EXPECT_FALSE(std::filesystem::exists(state_path()));
  EXPECT_TRUE(reaped(leader));
  // The crash left the worker behind (it would hold the GPU): the manager kills the group.
  EXPECT_TRUE(wait_process_gone(worker, 5s)) << "the crashed server's worker is still running";
  EXPECT_EQ(*calls, 1);

  // The next activate starts a fresh server.
  auto again = m.activate(entry("alpha", "alpha"));
  ASSERT_TRUE(settles(again));
  again.get();
  EXPECT_EQ(events.all("started").size(), 2u);
  EXPECT_EQ(m.status().state, BackendState::ready);
}

TEST_F(VllmManagerRecovery, RestartedManagerAdoptsTheRunningServer) {
  const auto e = entry("alpha", "alpha-served");
  pid_t pid = 0;
  {
    auto& first = manager();
    auto up = first.activate(e);
    ASSERT_TRUE(settles(up));
    up.get();
    pid = first.status().pid;
  }
  managers.clear();  // the proxy "crashes": no deactivate, the server keeps running
  ASSERT_TRUE(process_alive(pid));
  auto recorded = read_json_file(state_path());
  ASSERT_TRUE(recorded) << "no state file to adopt from";
  // Backdated, so an adoption that reports its own time instead of the server's shows.
  (*recorded)["started_at"] = "2025-01-02T03:04:05Z";
  std::ofstream(state_path()) << recorded->dump();

  auto& second = manager();
  auto recovered = second.recover();
  ASSERT_TRUE(settles(recovered));
  recovered.get();
  const auto st = second.status();
  EXPECT_EQ(st.state, BackendState::ready);
  EXPECT_TRUE(st.adopted);
  EXPECT_EQ(st.pid, pid);
  EXPECT_EQ(st.logical_name, "alpha");
  EXPECT_EQ(st.served_model_id, "alpha-served");
  EXPECT_EQ(st.port, cfg.vllm_port);
  EXPECT_EQ(st.base_url, "http://127.0.0.1:" + std::to_string(cfg.vllm_port));
  EXPECT_EQ(st.log_path, log_path("alpha").string());
  EXPECT_EQ(to_json(st)["started_at"], json("2025-01-02T03:04:05Z")) << "started_at is when the server started";

  // Asking for the adopted model starts nothing new.
  auto same = second.activate(e);
  ASSERT_TRUE(settles(same));
  same.get();
  EXPECT_EQ(events.all("started").size(), 1u);
  EXPECT_EQ(second.status().pid, pid);

  auto down = second.deactivate();
  ASSERT_TRUE(settles(down));
  down.get();
  EXPECT_FALSE(process_alive(pid));  // a zombie at most: the test process is its real parent
  EXPECT_TRUE(events.wait_for("exit", 0s));
  EXPECT_FALSE(std::filesystem::exists(state_path()));
  EXPECT_EQ(second.status().state, BackendState::stopped);
}

TEST_F(VllmManagerRecovery, AdoptedServerKilledIsNoticed) {
  pid_t pid = 0;
  {
    auto up = manager().activate(entry("alpha", "alpha"));
    ASSERT_TRUE(settles(up));
    up.get();
    pid = managers.back()->status().pid;
  }
  managers.clear();
  auto& m = manager();
  auto exited = std::make_shared<std::promise<std::string>>();
  auto reported = exited->get_future();
  m.on_unexpected_exit([exited](const std::string& why) { exited->set_value(why); });
  auto recovered = m.recover();
  ASSERT_TRUE(settles(recovered));
  recovered.get();
  ASSERT_TRUE(m.status().adopted);

  ASSERT_EQ(::kill(pid, SIGKILL), 0);  // the OOM killer, say: the server is not our child any more
  ASSERT_EQ(reported.wait_for(10s), std::future_status::ready) << "the adopted server's exit went unnoticed";
  EXPECT_NE(reported.get().find("exited on its own"), std::string::npos);
  EXPECT_EQ(m.status().state, BackendState::stopped);
  EXPECT_FALSE(std::filesystem::exists(state_path()));
}

TEST_F(VllmManagerRecovery, StateFileNamingADeadPidIsRemoved) {
  const pid_t dead = spawn_plain({"/bin/true"});
  ASSERT_GT(dead, 0);
  ASSERT_EQ(::waitpid(dead, nullptr, 0), dead);
  write_state(state_path(), dead, cfg.vllm_port, 0);

  auto& m = manager();
  auto recovered = m.recover();
  ASSERT_TRUE(settles(recovered));
  recovered.get();
  EXPECT_FALSE(std::filesystem::exists(state_path()));
  const auto st = m.status();
  EXPECT_EQ(st.state, BackendState::stopped);
  EXPECT_EQ(st.pid, 0);
  EXPECT_FALSE(st.adopted);
}

TEST_F(VllmManagerRecovery, UnreadableStateFilesAreRemovedNotFatal) {
  // Not JSON, not an object, fields of the wrong types (a hand edit, another version).
  for (const std::string content : {"{not json", "[1, 2]", R"({"pid": "1234", "port": 24001})",
                                    R"({"logical_name": 7, "pid": 1, "start_ticks": "x"})"}) {
    SCOPED_TRACE(content);
    std::filesystem::create_directories(state_path().parent_path());
    std::ofstream(state_path()) << content;
    auto& m = manager();
    auto recovered = m.recover();
    ASSERT_TRUE(settles(recovered));
    EXPECT_NO_THROW(recovered.get());
    EXPECT_FALSE(std::filesystem::exists(state_path()));
    EXPECT_EQ(m.status().state, BackendState::stopped);
  }
}

TEST_F(VllmManagerRecovery, StateFileNamingAReusedPidIsRemovedAndTheProcessLeftAlone) {
  const pid_t other = spawn_plain({"/bin/sleep", "60"});
  ASSERT_GT(other, 0);
  extra_pids.push_back(other);
  const auto ticks = start_ticks(other);
  ASSERT_TRUE(ticks);
  write_state(state_path(), other, cfg.vllm_port, *ticks + 1);  // same pid, another process

  auto& m = manager();
  auto recovered = m.recover();
  ASSERT_TRUE(settles(recovered));
  recovered.get();
  EXPECT_FALSE(std::filesystem::exists(state_path()));
  EXPECT_EQ(m.status().state, BackendState::stopped);
  auto down = m.deactivate();  // must not signal a process it does not own
  ASSERT_TRUE(settles(down));
  down.get();
  EXPECT_TRUE(process_alive(other));
}

TEST_F(VllmManagerRecovery, SwitchStopsTheOldServerBeforeTheNewOneStarts) {
  auto& m = manager();
  auto a = m.activate(entry("alpha", "alpha", {"--fake-stop-delay-ms", "300"}));
  ASSERT_TRUE(settles(a));
  a.get();
  const pid_t pid_a = m.status().pid;
  auto b = m.activate(entry("beta", "beta"));
  ASSERT_TRUE(settles(b));
  b.get();

  const auto exit_a = event_of("exit", "alpha", 0ms);
  const auto started_b = event_of("started", "beta", 0ms);
  ASSERT_TRUE(exit_a);
  ASSERT_TRUE(started_b);
  EXPECT_LE(exit_a->at("t_ms").get<std::int64_t>(), started_b->at("t_ms").get<std::int64_t>());
  const auto all = events.all();
  const auto pos = [&](const json& ev) { return std::find(all.begin(), all.end(), ev) - all.begin(); };
  EXPECT_LT(pos(*exit_a), pos(*started_b)) << "beta started while alpha was still running";
  EXPECT_TRUE(reaped(pid_a));

  const auto st = m.status();
  EXPECT_EQ(st.state, BackendState::ready);
  EXPECT_EQ(st.logical_name, "beta");
  EXPECT_EQ(st.pid, started_b->at("pid").get<int>());
  EXPECT_EQ(st.port, cfg.vllm_port);
  const auto state = read_json_file(state_path());
  ASSERT_TRUE(state);
  EXPECT_EQ(state->value("logical_name", ""), "beta");
  EXPECT_EQ(state->value("pid", 0), st.pid);
}

// The state file names a process group the manager adopts and later signals: it and the
// directories the manager creates for it are owner-only, and a file other users could have
// written is not believed (the server it names is left alone).
TEST_F(VllmManagerRecovery, StateFileIsOwnerOnlyAndAWritableByOthersOneIsNotAdopted) {
  pid_t pid = 0;
  {
    auto& first = manager();
    auto up = first.activate(entry("alpha", "alpha-served"));
    ASSERT_TRUE(settles(up));
    up.get();
    pid = first.status().pid;
  }
  auto mode = [](const std::filesystem::path& p) {
    struct stat st {};
    EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
    return st.st_mode & 07777;
  };
  EXPECT_EQ(mode(state_path()), 0600u);
  EXPECT_EQ(mode(state_path().parent_path()), 0700u) << "the manager created it";
  EXPECT_EQ(mode(log_path("alpha").parent_path()), 0700u);
  EXPECT_FALSE(std::filesystem::exists(state_path().string() + ".tmp"));
  managers.clear();  // the proxy "crashes"; the server keeps running
  ASSERT_TRUE(process_alive(pid));

  ASSERT_EQ(::chmod(state_path().c_str(), 0666), 0);
  auto& second = manager();
  auto recovered = second.recover();
  ASSERT_TRUE(settles(recovered));
  recovered.get();
  EXPECT_EQ(second.status().state, BackendState::stopped);
  EXPECT_FALSE(second.status().adopted);
  auto down = second.deactivate();  // must not signal what it did not adopt
  ASSERT_TRUE(settles(down));
  down.get();
  EXPECT_TRUE(process_alive(pid));
}

}  // namespace
}  // namespace imageworks::test
