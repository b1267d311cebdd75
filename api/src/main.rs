//! The `roster` binary.

// glibc's allocator took a seventh of the server's CPU on the match query (malloc, free and
// their consolidation); mimalloc's thread-local pages cost a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    api::cli::main()
}
