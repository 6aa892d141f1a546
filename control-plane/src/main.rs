//! The `kubechat-control-plane` server binary.

fn main() -> std::process::ExitCode {
    kubechat_control_plane::cli::main()
}
