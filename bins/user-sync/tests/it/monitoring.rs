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
    test_support::monitoring::assert_exports_what_monitoring_names(
        &text,
        "user_sync_",
        6,
        env!("CARGO_PKG_VERSION"),
    );
    drop(process); // killed on drop
}
