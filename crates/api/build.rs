//! Generates the etcd v3 gRPC server traits from the same proto files as
//! `kv`, reusing kv's message types (extern_path), with the vendored protoc.
fn main() {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(
        protoc_bin_vendored::protoc_bin_path().expect("vendored protoc for this platform"),
    );
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .extern_path(".etcdserverpb", "::kv::pb::etcdserverpb")
        .extern_path(".mvccpb", "::kv::pb::mvccpb")
        .extern_path(".authpb", "::kv::pb::authpb")
        .compile_with_config(
            config,
            &["../kv/proto/etcdserverpb/rpc.proto"],
            &["../kv/proto"],
        )
        .expect("etcd protos compile");
    // etcd's lock and election services: messages and servers here, over
    // kv's etcdserverpb and mvccpb types.
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(
        protoc_bin_vendored::protoc_bin_path().expect("vendored protoc for this platform"),
    );
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .extern_path(".etcdserverpb", "::kv::pb::etcdserverpb")
        .extern_path(".mvccpb", "::kv::pb::mvccpb")
        .extern_path(".authpb", "::kv::pb::authpb")
        .compile_with_config(
            config,
            &["proto/v3lock.proto", "proto/v3election.proto"],
            &["proto", "../kv/proto"],
        )
        .expect("etcd lock and election protos compile");
    println!("cargo:rerun-if-changed=../kv/proto");
    println!("cargo:rerun-if-changed=proto");
}
