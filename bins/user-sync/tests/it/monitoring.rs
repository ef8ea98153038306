//! deploy/monitoring names only metrics the running binary exports.

use test_support::TestEnv;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitoring_files_name_only_metrics_user_sync_exports() {
    let env = TestEnv::new().await;
    let n = names(&env);
    let process = spawn_process(&env, &n, free_port()).await;
    let text = reqwest::get(format!("{}/metrics", process.health))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let names = test_support::monitoring::names("user_sync_");
    assert!(names.len() >= 6, "{names:?}");
    for name in &names {
        assert!(
            test_support::monitoring::exported(&text, name),
            "{name} is in deploy/monitoring but not in user-sync's /metrics:\n{text}"
        );
    }
    assert!(text.contains("user_sync_ready 1"), "{text}");
    assert!(
        text.contains(&format!(
            "user_sync_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    drop(process); // killed on drop
}
