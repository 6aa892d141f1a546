//! The relay's real `main`, built inside the test crate so end-to-end tests
//! can run (and kill -9) it as a separate process.

fn main() -> std::process::ExitCode {
    kubechat_relay::cli::main()
}
