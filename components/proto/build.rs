fn main() {
    let files = [
        "metapb.proto",
        "errorpb.proto",
        "eraftpb.proto",
        "kvrpcpb.proto",
        "tikvpb.proto",
        "pdpb.proto",
        "keyspacepb.proto",
        "atollpb.proto",
    ];
    let paths: Vec<String> = files.iter().map(|f| format!("../../proto/{f}")).collect();
    for p in &paths {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_build::configure().compile(&paths, &["../../proto"]).expect("compile protos");
}
