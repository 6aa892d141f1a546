//! The `kubechat-agent` binary; all logic lives in the library.

fn main() -> std::process::ExitCode {
    kubechat_agent::cli::main()
}
