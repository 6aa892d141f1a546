//! The `kubechat-control-plane` server binary.

/// mimalloc: about a quarter less CPU per kube request than glibc's
/// malloc across control plane, relay and agent (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    kubechat_control_plane::cli::main()
}
