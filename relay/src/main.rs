//! The `kubechat-relay` binary; all logic lives in the library.

fn main() -> std::process::ExitCode {
    kubechat_relay::cli::main()
}
