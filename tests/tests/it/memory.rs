//! Memory observability of a `roost` process: the allocator's statistics in `/metrics` and heap
//! profiles from `/debug/pprof/heap`, on only when `http.heap_profile` asks for it.

use roost_tests::process::NodeProcess;

async fn get(url: &str) -> (u16, Vec<u8>) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn heap_profiles_and_allocator_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--http-heap-profile", "true"]).await;

    let (status, metrics) = get(&format!("{}/metrics", node.http)).await;
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics).unwrap();
    let allocated: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("roost_allocator_allocated_bytes "))
        .expect("roost_allocator_allocated_bytes in /metrics")
        .parse()
        .unwrap();
    let rss: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    // A running node holds megabytes, all of it within its resident set.
    assert!(allocated > 1e6 && allocated < rss, "{allocated} of {rss}");

    let (status, pprof) = get(&format!("{}/debug/pprof/heap", node.http)).await;
    assert_eq!(status, 200);
    assert_eq!(&pprof[..2], &[0x1f, 0x8b], "a gzipped pprof protobuf");
    let (status, dump) = get(&format!("{}/debug/pprof/heap?format=jeprof", node.http)).await;
    assert_eq!(status, 200);
    let dump = String::from_utf8(dump).unwrap();
    assert!(
        dump.starts_with("heap_v2/"),
        "{}",
        &dump[..dump.len().min(200)]
    );
    assert!(
        dump.contains("MAPPED_LIBRARIES"),
        "jeprof needs the mappings"
    );
    let (status, _) = get(&format!("{}/debug/pprof/heap?format=svg", node.http)).await;
    assert_eq!(status, 400);

    // Without the flag nothing is sampled and the endpoint says how to turn it on.
    let dir = tempfile::tempdir().unwrap();
    let plain = NodeProcess::start(dir.path(), &[]).await;
    let (status, body) = get(&format!("{}/debug/pprof/heap", plain.http)).await;
    assert_eq!(status, 409);
    assert!(String::from_utf8(body)
        .unwrap()
        .contains("http.heap_profile"));
}
