//! The `sealtrail` binary: the command line is in the library ([`sealtrail::main`]).
#![forbid(unsafe_code)]

/// mimalloc (its v2 line, which returned memory to the OS sooner than v3 in our benchmark):
/// ingest allocates and frees many small objects across threads, where glibc's allocator
/// spent a third of the CPU time in the benchmark's profile. The feature `system-allocator`
/// leaves it out, for heap profilers that hook `malloc`.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sealtrail::main()
}
