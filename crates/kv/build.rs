//! Generates the etcd v3 message types (packages `etcdserverpb`, `mvccpb`, `authpb`)
//! and bftd's command encoding (`bftdkv`) with prost, using the protoc
//! binary shipped in the `protoc-bin-vendored` crate so no system protoc is
//! needed. Only messages are generated here; the `api` crate compiles the
//! same files again for the tonic services, with `extern_path` pointing at
//! these types.
//!
//! The etcd packages also get serde impls (pbjson-build) in the JSON
//! mapping etcd's gRPC gateway speaks (grpc-gateway's JSONPb with
//! `OrigName`): proto field names as written in the .proto files
//! (`create_revision`, `dbSize`), 64-bit integers as strings, bytes as
//! base64, enums by name, default values left out; when reading, both the
//! proto names and lowerCamel names are accepted and unknown fields are
//! ignored (as etcd 3.4's gateway does).

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
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let descriptors = out_dir.join("etcd_descriptors.bin");
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc for this platform");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    config.file_descriptor_set_path(&descriptors);
    config
        .compile_protos(&protos, &["proto"])
        .expect("compile etcd and bftd protos");
    let set = std::fs::read(&descriptors).expect("read the descriptor set");
    pbjson_build::Builder::new()
        .register_descriptors(&set)
        .expect("register etcd descriptors")
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[".etcdserverpb", ".mvccpb", ".authpb"])
        .expect("generate serde impls for etcd messages");
}
