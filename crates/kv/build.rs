//! Generates the etcd v3 message types (packages `etcdserverpb`, `mvccpb`, `authpb`)
//! and bftd's command encoding (`bftdkv`) with prost, using the protoc
//! binary shipped in the `protoc-bin-vendored` crate so no system protoc is
//! needed. Only messages are generated here; the `api` crate compiles the
//! same files again for the tonic services, with `extern_path` pointing at
//! these types.

fn main() {
    let protos = [
        "proto/mvccpb/kv.proto",
        "proto/authpb/auth.proto",
        "proto/etcdserverpb/rpc.proto",
        "proto/bftdkv.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc for this platform");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    config
        .compile_protos(&protos, &["proto"])
        .expect("compile etcd and bftd protos");
}
