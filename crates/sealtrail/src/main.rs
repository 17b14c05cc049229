//! The `sealtrail` binary: the command line is in the library ([`sealtrail::main`]).
#![deny(unsafe_code)]

/// jemalloc: ingest allocates and frees many small objects across threads, where glibc's
/// allocator spent a third of the CPU time in the benchmark's profile. Against mimalloc
/// (v2, the allocator before 2026-12-06) it ran batches and gRPC streams 7 – 41% faster in
/// alternating benchmark runs, and with the settings of [`MALLOC_CONF`] it held less memory
/// at the peak (README, "Memory and restart" and "Benchmark"). The feature `system-allocator` leaves it out, for heap
/// profilers that hook `malloc`.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts (its `malloc_conf`; the environment variable
/// `_RJEM_MALLOC_CONF` overrides any of them, e.g. `_RJEM_MALLOC_CONF=narenas:8`):
/// - `narenas:2` — two arenas instead of four per core: the threads that allocate most
///   (the runtime's workers, the chainers, the indexer, the writer) share them through
///   per-thread caches, and fewer arenas hold fewer partly used pages;
/// - `background_thread:true`, `dirty_decay_ms:200`, `muzzy_decay_ms:0` — freed pages go
///   back to the OS within about 200 ms, from jemalloc's own thread, instead of after 10 s.
///
/// A thin pointer to a NUL-terminated string: the C declaration is `const char *`.
#[cfg(not(feature = "system-allocator"))]
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &u8 =
    &b"narenas:2,background_thread:true,dirty_decay_ms:200,muzzy_decay_ms:0\0"[0];

fn main() -> std::process::ExitCode {
    sealtrail::main()
}
