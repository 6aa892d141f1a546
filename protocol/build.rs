//! Compiles the protobuf definitions with protox (pure Rust), so a fresh
//! machine needs no system `protoc`. The tunnel protocol gets prost messages;
//! the relay ↔ control-plane services also get tonic clients and servers
//! (compiled in only with the `grpc` feature).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tunnel = ["proto/kubechat/tunnel/v1/tunnel.proto"];
    let services = ["proto/kubechat/presence/v1/presence.proto", "proto/kubechat/events/v1/events.proto"];
    for p in tunnel.iter().chain(&services) {
        println!("cargo:rerun-if-changed={p}");
    }
    prost_build::Config::new().bytes(["."]).compile_fds(protox::compile(tunnel, ["proto"])?)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .bytes(".")
        .compile_fds(protox::compile(services, ["proto"])?)?;
    Ok(())
}
