// Owner-only files (the vLLM state file): modes, atomic replace, planted symlinks, and which
// files are believed.
#include <fstream>

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imageworks/private_files.hpp"
#include "support/test_support.hpp"

using namespace imageworks;
using imageworks::test::TempDir;
namespace fs = std::filesystem;

namespace {

unsigned mode_of(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST(PrivateFiles, NewDirectoriesAreOwnerOnlyExistingOnesUntouched) {
  TempDir dir;
  fs::create_directories(dir.path() / "shared");
  ::chmod((dir.path() / "shared").c_str(), 0755);
  EXPECT_FALSE(create_private_dirs(dir.path() / "shared" / "a" / "b"));
  EXPECT_EQ(mode_of(dir.path() / "shared"), 0755u);
  EXPECT_EQ(mode_of(dir.path() / "shared" / "a"), 0700u);
  EXPECT_EQ(mode_of(dir.path() / "shared" / "a" / "b"), 0700u);
  dir.write("file", "x");
  EXPECT_TRUE(create_private_dirs(dir.path() / "file")) << "a file is not a directory";
}

TEST(PrivateFiles, WriteReplacesAtomicallyWithMode0600AndNeverFollowsAPlantedSymlink) {
  TempDir dir;
  const auto path = dir.path() / "state" / "active.json";
  ASSERT_FALSE(write_private_file(path, "first"));
  EXPECT_EQ(slurp(path), "first");
  EXPECT_EQ(mode_of(path), 0600u);
  EXPECT_EQ(mode_of(path.parent_path()), 0700u);
  // A symlink planted where the temporary file goes must not redirect the write.
  const auto victim = dir.write("victim", "untouched");
  fs::create_symlink(victim, path.string() + ".tmp");
  ASSERT_FALSE(write_private_file(path, "second"));
  EXPECT_EQ(slurp(path), "second");
  EXPECT_EQ(slurp(victim), "untouched");
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));
  EXPECT_TRUE(write_private_file(dir.path() / "victim" / "x", "y")) << "a file as the parent directory is an error";
}

TEST(PrivateFiles, OnlyOwnRegularFilesNotWritableByOthersAreTrusted) {
  TempDir dir;
  EXPECT_FALSE(untrusted_file_problem(dir.path() / "missing"));
  const auto f = dir.write("state.json", "{}");
  ::chmod(f.c_str(), 0644);
  EXPECT_FALSE(untrusted_file_problem(f));
  ::chmod(f.c_str(), 0664);
  ASSERT_TRUE(untrusted_file_problem(f));
  EXPECT_NE(untrusted_file_problem(f)->find("writable by other users"), std::string::npos);
  ::chmod(f.c_str(), 0602);
  EXPECT_TRUE(untrusted_file_problem(f));
  ::chmod(f.c_str(), 0600);
  const auto link = dir.path() / "link.json";
  fs::create_symlink(f, link);
  ASSERT_TRUE(untrusted_file_problem(link));
  EXPECT_NE(untrusted_file_problem(link)->find("not a regular file"), std::string::npos);
  if (::geteuid() == 0) {  // root can hand a file to someone else and see it refused
    ASSERT_EQ(::chown(f.c_str(), 65534, 65534), 0);
    ASSERT_TRUE(untrusted_file_problem(f));
    EXPECT_NE(untrusted_file_problem(f)->find("another user"), std::string::npos);
  }
}
