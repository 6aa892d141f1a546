//! The control-plane server, built in this package so integration tests can
//! run it as a process (and kill it with SIGKILL).

fn main() -> std::process::ExitCode {
    kubechat_control_plane::cli::main()
}
