//! The `roost` binary: parses the command line and hands over to [`roost_node::cli`].

/// jemalloc for every allocation of the process (it replaces `malloc`, so RocksDB's too): it
/// returns freed memory to the OS where glibc's per-thread arenas fragment under RocksDB and
/// many async workers, and it reports its own statistics and heap profiles
/// ([`roost_node::alloc`]).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    roost_node::cli::main()
}
