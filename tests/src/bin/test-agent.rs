//! The agent binary (`kubechat-agent`'s very `main`), built in this package
//! so integration tests can start it as a process from a pod spec.

fn main() -> std::process::ExitCode {
    kubechat_agent::cli::main()
}
