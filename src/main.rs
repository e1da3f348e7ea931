/// mimalloc: the control plane allocates many small strings and nodes per task file; mimalloc
/// is measurably faster at that than the system allocator (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    kiln::cli::main()
}
